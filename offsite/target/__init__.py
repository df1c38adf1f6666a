"""What the backup target holds and how it is reached: bucket access, the catalog of sets and chains, archived volumes."""
