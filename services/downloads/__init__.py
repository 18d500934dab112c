"""The download monitor: webhook → Dropbox download → SQLite history → orchestrator job."""
