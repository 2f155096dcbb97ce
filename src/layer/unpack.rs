//! Unpacking layers onto a directory (see the sandbox issue).
