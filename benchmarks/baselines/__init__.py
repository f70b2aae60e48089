"""Reference backends measured beside the app in the same harness and the same run."""
