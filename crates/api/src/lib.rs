//! Generated protobuf and gRPC code for lightops.
//!
//! One module per protobuf package (`lightops.<area>.v1`), generated at build time by
//! `tonic-prost-build` with a vendored `protoc`. [`FILE_DESCRIPTOR_SET`] holds the encoded
//! descriptors of every package, for `tonic-reflection`.

#![allow(missing_docs)] // generated code carries the proto comments, not rustdoc on every item

/// Encoded `google.protobuf.FileDescriptorSet` of all lightops protos, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("lightops_descriptor");

/// `lightops.registry.v1`: experiment tracking and the model registry.
pub mod registry {
    /// Version 1 of the registry API.
    pub mod v1 {
        tonic::include_proto!("lightops.registry.v1");
    }
}

/// `lightops.predictor.v1`: predictions for single rides, batches and streams.
pub mod predictor {
    /// Version 1 of the predictor API.
    pub mod v1 {
        tonic::include_proto!("lightops.predictor.v1");
    }
}

/// `lightops.trainer.v1`: training jobs, in-process or as Kubernetes Jobs, on demand or on a
/// schedule.
pub mod trainer {
    /// Version 1 of the trainer API.
    pub mod v1 {
        tonic::include_proto!("lightops.trainer.v1");
    }
}

/// `lightops.monitor.v1`: drift, data quality and model quality reports, alerts and actuals.
pub mod monitor {
    /// Version 1 of the monitor API.
    pub mod v1 {
        tonic::include_proto!("lightops.monitor.v1");
    }
}

/// `lightops.common.v1`: messages shared by every service.
pub mod common {
    /// Version 1 of the shared messages.
    pub mod v1 {
        tonic::include_proto!("lightops.common.v1");
    }
}

/// `inference`: the Open Inference Protocol v2 (KServe / Triton) gRPC API.
pub mod inference {
    tonic::include_proto!("inference");
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn descriptor_set_describes_the_common_package() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("valid descriptor set");
        let common =
            set.file.iter().find(|f| f.package() == "lightops.common.v1").expect("lightops.common.v1 is in the set");
        let messages: Vec<&str> = common.message_type.iter().map(|m| m.name()).collect();
        for name in ["FeatureSpec", "Ride", "RegressionMetrics", "ModelRef"] {
            assert!(messages.contains(&name), "{name} missing from {messages:?}");
        }
    }

    #[test]
    fn descriptor_set_describes_the_open_inference_protocol() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("valid descriptor set");
        let oip = set.file.iter().find(|f| f.package() == "inference").expect("inference is in the set");
        let service =
            oip.service.iter().find(|s| s.name() == "GRPCInferenceService").expect("inference.GRPCInferenceService");
        let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
        for name in ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"] {
            assert!(methods.contains(&name), "{name} missing from {methods:?}");
        }
        // Field numbers real KServe/Triton clients rely on.
        let request = oip.message_type.iter().find(|m| m.name() == "ModelInferRequest").expect("ModelInferRequest");
        let raw = request.field.iter().find(|f| f.name() == "raw_input_contents").expect("raw_input_contents");
        assert_eq!(raw.number(), 7);
        let response = oip.message_type.iter().find(|m| m.name() == "ModelInferResponse").expect("ModelInferResponse");
        let raw = response.field.iter().find(|f| f.name() == "raw_output_contents").expect("raw_output_contents");
        assert_eq!(raw.number(), 6);
    }

    #[test]
    fn messages_round_trip_on_the_wire() {
        let ride = common::v1::Ride {
            ride_id: "ride_xyz".into(),
            pu_location_id: 100,
            do_location_id: 102,
            trip_distance: 30.0,
            event_time_ms: 1_656_633_600_000,
        };
        let bytes = ride.encode_to_vec();
        assert_eq!(common::v1::Ride::decode(bytes.as_slice()).expect("decode"), ride);
    }
}
