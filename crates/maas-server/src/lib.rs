//! maas-server
