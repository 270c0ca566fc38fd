"""The Ray XCom backend (keeps results in the cluster's object store); not built yet."""
