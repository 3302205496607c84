"""A minimal third-party ovnk plugin (test fixture)."""
