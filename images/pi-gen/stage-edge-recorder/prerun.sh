#!/bin/bash -e
# pi-gen runs this before the stage's sub-stages: start from the previous stage's root file
# system (stage2, Raspberry Pi OS Lite), as pi-gen's own stages do. copy_previous and ROOTFS_DIR
# come from pi-gen (scripts/common, build.sh). On a rebuild without CLEAN=1 the root file system
# is kept, and the install below runs again (images/install.sh can be repeated).

if [ ! -d "${ROOTFS_DIR}" ]; then
  copy_previous
fi
