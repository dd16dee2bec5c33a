//! shoplake-storefront-emitter
