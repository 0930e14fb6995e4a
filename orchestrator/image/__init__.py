"""The guest image stage: initramfs images (busybox, the guest agent, guest tests, a
kernel's modules) and the stand-in board's image. In: an Artifact and guest tests. Out:
a cached image file.
"""
