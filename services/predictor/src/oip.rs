//! The Open Inference Protocol v2 (`inference.GRPCInferenceService`), so KServe and Triton
//! clients can call the predictor.
//!
//! The model has three inputs named after the features, batched along the first dimension
//! (shape `[N]` or `[N, 1]`): `PULocationID` and `DOLocationID` (INT64 or INT32) and
//! `trip_distance` (FP64 or FP32); optionally `ride_id` (BYTES, UTF-8) and `event_time_ms`
//! (INT64). The output is `duration` (FP64, shape `[N]`), in `raw_output_contents` when the
//! request sent raw inputs, else in typed contents. Data may come typed (`contents`) or raw
//! (`raw_input_contents`, little-endian).

use std::time::Instant;

use lightops_api::inference as pb;
use pb::model_infer_request::InferInputTensor;
use pb::model_infer_response::InferOutputTensor;
use pb::model_metadata_response::TensorMetadata;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::metrics::Api;
use crate::predict::{Predictor, RideIn, check_ride};

/// The platform string reported in model metadata.
pub const PLATFORM: &str = "lightops_linear";

/// The OIP v2 service.
#[derive(Debug, Clone)]
pub struct InferenceService {
    predictor: Predictor,
}

impl InferenceService {
    /// Serves OIP v2 from `predictor`.
    pub fn new(predictor: Predictor) -> Self {
        Self { predictor }
    }

    /// The served model, if `name`/`version` designate it (an empty version means "current").
    fn model_named(&self, name: &str, version: &str) -> Result<std::sync::Arc<crate::LoadedModel>> {
        let model = self.predictor.model()?;
        if name != model.id.name {
            return Err(Error::NotFound(format!(
                "model {name:?} is not served here (this predictor serves {:?})",
                model.id.name
            )));
        }
        if !version.is_empty() && version != model.id.version {
            return Err(Error::NotFound(format!(
                "model {name:?} version {version:?} is not served here (serving version {:?})",
                model.id.version
            )));
        }
        Ok(model)
    }

    fn infer(&self, request: pb::ModelInferRequest) -> Result<pb::ModelInferResponse> {
        let started = Instant::now();
        if request.model_name.is_empty() {
            return Err(Error::invalid("model_name", "is missing"));
        }
        let raw = !request.raw_input_contents.is_empty();
        if raw && request.raw_input_contents.len() != request.inputs.len() {
            return Err(Error::invalid(
                "raw_input_contents",
                format!("has {} entries for {} inputs", request.raw_input_contents.len(), request.inputs.len()),
            ));
        }
        let tensor = |name: &str| -> Option<(usize, &InferInputTensor)> {
            request.inputs.iter().enumerate().find(|(_, t)| t.name == name)
        };
        let column = |name: &str, required: bool| -> Result<Option<Column>> {
            match tensor(name) {
                Some((index, input)) => {
                    let raw_bytes = request.raw_input_contents.get(index).map(|b| b.as_slice());
                    decode(input, raw_bytes).map(Some).map_err(|e| e.within(&format!("inputs[{index}]")))
                }
                None if required => Err(Error::invalid("inputs", format!("no tensor named {name:?}"))),
                None => Ok(None),
            }
        };
        let pu = column("PULocationID", true)?.unwrap_or_default().integers("PULocationID")?;
        let rows = pu.len();
        let do_ = column("DOLocationID", true)?.unwrap_or_default().integers("DOLocationID")?;
        let distance = column("trip_distance", true)?.unwrap_or_default().floats("trip_distance")?;
        let ride_ids = column("ride_id", false)?.map(|c| c.strings("ride_id")).transpose()?;
        let times = column("event_time_ms", false)?.map(|c| c.integers("event_time_ms")).transpose()?;
        for (name, len) in [
            ("DOLocationID", do_.len()),
            ("trip_distance", distance.len()),
            ("ride_id", ride_ids.as_ref().map_or(rows, Vec::len)),
            ("event_time_ms", times.as_ref().map_or(rows, Vec::len)),
        ] {
            if len != rows {
                return Err(Error::invalid(name, format!("has {len} rows; PULocationID has {rows}")));
            }
        }
        if rows == 0 {
            return Err(Error::invalid("inputs", "hold no rows"));
        }
        if rows > crate::grpc::MAX_BATCH {
            return Err(Error::invalid("inputs", format!("hold {rows} rows; at most {}", crate::grpc::MAX_BATCH)));
        }
        for output in &request.outputs {
            if output.name != "duration" {
                return Err(Error::invalid(
                    "outputs",
                    format!("unknown output {:?}; the model has \"duration\"", output.name),
                ));
            }
        }
        let model = self.model_named(&request.model_name, &request.model_version)?;
        let mut ride_ids = ride_ids.map(Vec::into_iter);
        let rides = (0..rows)
            .map(|i| {
                let ride =
                    lightops_ml::Ride { pu_location_id: pu[i], do_location_id: do_[i], trip_distance: distance[i] };
                let ride_id = ride_ids.as_mut().and_then(Iterator::next).unwrap_or_default();
                let time = times.as_ref().map(|t| t[i]).filter(|t| *t != 0);
                check_ride(ride_id, ride, time).map_err(|e| match e {
                    Error::Invalid { field, problem } => Error::Invalid { field: format!("{field}[{i}]"), problem },
                    other => other,
                })
            })
            .collect::<Result<Vec<RideIn>>>()?;
        let durations = self.predictor.answer(Api::ModelInfer, &model, &rides, started);
        let shape = vec![rows as i64];
        let (contents, raw_output_contents) = if raw {
            (None, vec![durations.iter().flat_map(|d| d.to_le_bytes()).collect()])
        } else {
            (Some(pb::InferTensorContents { fp64_contents: durations, ..Default::default() }), Vec::new())
        };
        Ok(pb::ModelInferResponse {
            model_name: model.id.name.clone(),
            model_version: model.id.version.clone(),
            id: request.id,
            parameters: Default::default(),
            outputs: vec![InferOutputTensor {
                name: "duration".into(),
                datatype: "FP64".into(),
                shape,
                parameters: Default::default(),
                contents,
            }],
            raw_output_contents,
        })
    }
}

/// A decoded input tensor.
#[derive(Debug, Default)]
enum Column {
    #[default]
    Empty,
    Ints(Vec<i64>),
    Floats(Vec<f64>),
    Strings(Vec<String>),
}

impl Column {
    fn integers(self, name: &str) -> Result<Vec<i64>> {
        match self {
            Self::Ints(values) => Ok(values),
            Self::Empty => Ok(Vec::new()),
            _ => Err(Error::invalid(name, "must be INT64 or INT32")),
        }
    }

    fn floats(self, name: &str) -> Result<Vec<f64>> {
        match self {
            Self::Floats(values) => Ok(values),
            Self::Empty => Ok(Vec::new()),
            _ => Err(Error::invalid(name, "must be FP64 or FP32")),
        }
    }

    fn strings(self, name: &str) -> Result<Vec<String>> {
        match self {
            Self::Strings(values) => Ok(values),
            Self::Empty => Ok(Vec::new()),
            _ => Err(Error::invalid(name, "must be BYTES")),
        }
    }
}

/// Decodes one input tensor from its typed contents or its raw bytes, checking the shape.
fn decode(input: &InferInputTensor, raw: Option<&[u8]>) -> Result<Column> {
    let rows = match input.shape.as_slice() {
        [n] | [n, 1] if *n >= 0 => *n as usize,
        other => return Err(Error::invalid("shape", format!("must be [N] or [N, 1], got {other:?}"))),
    };
    let contents = input.contents.clone().unwrap_or_default();
    if raw.is_some() && input.contents.is_some() {
        return Err(Error::invalid("contents", "must be empty when raw_input_contents is used"));
    }
    let column = match (input.datatype.as_str(), raw) {
        ("INT64", None) => Column::Ints(contents.int64_contents),
        ("INT32", None) => Column::Ints(contents.int_contents.into_iter().map(i64::from).collect()),
        ("FP64", None) => Column::Floats(contents.fp64_contents),
        ("FP32", None) => Column::Floats(contents.fp32_contents.into_iter().map(f64::from).collect()),
        ("BYTES", None) => Column::Strings(contents.bytes_contents.into_iter().map(utf8).collect::<Result<Vec<_>>>()?),
        ("INT64", Some(bytes)) => Column::Ints(fixed::<8, _>(bytes, rows, i64::from_le_bytes)?),
        ("INT32", Some(bytes)) => Column::Ints(fixed::<4, _>(bytes, rows, |b| i64::from(i32::from_le_bytes(b)))?),
        ("FP64", Some(bytes)) => Column::Floats(fixed::<8, _>(bytes, rows, f64::from_le_bytes)?),
        ("FP32", Some(bytes)) => Column::Floats(fixed::<4, _>(bytes, rows, |b| f64::from(f32::from_le_bytes(b)))?),
        ("BYTES", Some(bytes)) => Column::Strings(length_prefixed(bytes)?),
        (other, _) => return Err(Error::invalid("datatype", format!("{other:?} is not supported here"))),
    };
    let len = match &column {
        Column::Ints(v) => v.len(),
        Column::Floats(v) => v.len(),
        Column::Strings(v) => v.len(),
        Column::Empty => 0,
    };
    if len != rows {
        return Err(Error::invalid("contents", format!("hold {len} elements; the shape says {rows}")));
    }
    Ok(column)
}

fn utf8(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| Error::invalid("contents", "BYTES elements must be UTF-8"))
}

/// Fixed-width little-endian elements.
fn fixed<const N: usize, T>(bytes: &[u8], rows: usize, convert: impl Fn([u8; N]) -> T) -> Result<Vec<T>> {
    if bytes.len() != rows * N {
        return Err(Error::invalid(
            "raw_input_contents",
            format!("has {} bytes; {rows} elements of {N} bytes need {}", bytes.len(), rows * N),
        ));
    }
    Ok(bytes.chunks_exact(N).map(|chunk| convert(chunk.try_into().unwrap_or([0; N]))).collect())
}

/// BYTES in raw form: each element is a 4-byte little-endian length, then the bytes.
fn length_prefixed(mut bytes: &[u8]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(Error::invalid("raw_input_contents", "truncated BYTES length prefix"));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(Error::invalid("raw_input_contents", "BYTES element longer than the data"));
        }
        out.push(utf8(rest[..len].to_vec())?);
        bytes = &rest[len..];
    }
    Ok(out)
}

fn tensor(name: &str, datatype: &str) -> TensorMetadata {
    TensorMetadata { name: name.into(), datatype: datatype.into(), shape: vec![-1] }
}

#[tonic::async_trait]
impl pb::grpc_inference_service_server::GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _request: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _request: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: self.predictor.model().is_ok() }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let request = request.into_inner();
        let ready = self.model_named(&request.name, &request.version).is_ok();
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _request: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "lightops-predictor".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: Vec::new(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let model = self.model_named(&request.name, &request.version)?;
        Ok(Response::new(pb::ModelMetadataResponse {
            name: model.id.name.clone(),
            versions: vec![model.id.version.clone()],
            platform: PLATFORM.into(),
            inputs: vec![
                tensor("PULocationID", "INT64"),
                tensor("DOLocationID", "INT64"),
                tensor("trip_distance", "FP64"),
                tensor("ride_id", "BYTES"),
                tensor("event_time_ms", "INT64"),
            ],
            outputs: vec![tensor("duration", "FP64")],
        }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let answer = self.infer(request.into_inner()).map_err(|e| self.predictor.refuse(Api::ModelInfer, e))?;
        Ok(Response::new(answer))
    }
}
