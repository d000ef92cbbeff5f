"""Test peers and fixtures shared by the test modules."""
