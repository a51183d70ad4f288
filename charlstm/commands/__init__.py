"""One module per CLI command; see charlstm.cli."""
