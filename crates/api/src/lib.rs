//! Generated protobuf and gRPC code for lightops.
//!
//! One module per protobuf package (`lightops.<area>.v1`), generated at build time by
//! `tonic-prost-build` with a vendored `protoc`. [`FILE_DESCRIPTOR_SET`] holds the encoded
//! descriptors of every package, for `tonic-reflection`.

#![allow(missing_docs)] // generated code carries the proto comments, not rustdoc on every item

/// Encoded `google.protobuf.FileDescriptorSet` of all lightops protos, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("lightops_descriptor");

/// `lightops.common.v1`: messages shared by every service.
pub mod common {
    /// Version 1 of the shared messages.
    pub mod v1 {
        tonic::include_proto!("lightops.common.v1");
    }
}
