//! Examples live beside this file.
