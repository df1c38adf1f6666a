"""What proves and trims the target: verify (restore drills), restore, retention and prune, recover."""
