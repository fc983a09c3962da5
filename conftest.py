pytest_plugins = ["harness.pytest.plugin"]
