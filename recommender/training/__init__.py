"""Training: inputs from the stores, the candidates' fit, offline evaluation, the gate and
registration. It sits above the models and offline evaluation, which it uses."""
