"""The File Exporter: the daily C{utterances} feed, its files and its schedule."""
