//! shoplake-query
