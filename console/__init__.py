"""The console layer: commands and local process management on top of everything else."""
