"""What the kernels of kernel.py need besides their math: kernel_launch.py, the launch machinery."""
