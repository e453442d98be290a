"""The command line, the scripts, the lock, the layers and the plug-in mechanism."""
