"""The asapp-mg test suite."""
