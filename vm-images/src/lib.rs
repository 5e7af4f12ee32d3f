//! Obtains, caches and assembles what a bigbar run boots.
