"""Windows onto finished runs: a static HTML report (``report``) and a browser app (``app``).

Both read run directories through ``run_view`` and never train; neither imports the other.
"""
