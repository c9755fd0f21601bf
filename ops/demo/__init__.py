"""`make demo`: the whole system end to end on the local stack (`movierec demo up|down|status`)."""
