#!/bin/sh
# MISC_CHECK helper for the oracle lab: exits with the code it is given.
exit "$1"
