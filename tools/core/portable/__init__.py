"""Files copied into every deployment package; they import nothing from ml-expert."""
