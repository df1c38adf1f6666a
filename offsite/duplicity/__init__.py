"""duplicity: its command lines, what its failures mean, whether this node's key opens a chain."""
