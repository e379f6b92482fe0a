//! marvin-web front end.
