"""One ruler for every family: ``genzoo bench`` (``runner``), the results file (``records``) and its tables (``tables``)."""
