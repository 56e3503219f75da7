//! Real swtpm processes as simulated devices (being written).
