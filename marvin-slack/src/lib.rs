//! marvin-slack front end.
