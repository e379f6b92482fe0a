//! marvin-telegram front end.
