"""The team's dashboard: one web page (``movierec dashboard``) over Prometheus and the
project's own stores, and the Grafana dashboard built from the same panel list.

- ``panels``: the panels as plain data (the one home of every query);
- ``grafana``: the panel list as Grafana dashboard JSON (ops/grafana/dashboards/);
- ``prom``: a small client of Prometheus's HTTP API;
- ``sources``: the registry, the experiment file, the loop's journal, the alerts, provenance;
- ``charts`` and ``render``: pure functions from data to SVG and HTML;
- ``page``: gathers the data of every panel for one request;
- ``app``: the Flask app; ``cli``: the ``movierec dashboard`` command.
"""
