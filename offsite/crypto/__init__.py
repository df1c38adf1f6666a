"""Keys and passphrases: how a node encrypts and decrypts, and whether an escrowed key still opens a host's backups."""
