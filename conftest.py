pytest_plugins = ["pytest_pplgate.plugin"]
