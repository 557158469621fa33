"""Audio files: streaming writers (WAV, MP3), the input file reader, and the
step that turns a spooled recording into its finished file."""
