//! gRPC server reflection (`grpc.reflection.v1` and `v1alpha`, one wire format), answered
//! by the gateway from the contracts' descriptors, as the Python gateway's reflection
//! service: the services it serves, and each file by name or by a symbol it defines, with
//! the files it depends on. No admission and no entry: it reveals only the public contracts.
//!
//! The descriptors are a `FileDescriptorSet` the control plane writes beside the
//! configuration (`gateway/dataplane_config.py`).

use std::collections::{BTreeSet, HashMap};

use prost::Message as _;
use prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet};

/// The reflection methods' paths.
pub const PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// gRPC's `NOT_FOUND`, as reflection's `ErrorResponse` carries it.
const NOT_FOUND: i32 = 5;
/// gRPC's `INVALID_ARGUMENT`.
const INVALID_ARGUMENT: i32 = 3;

/// `ServerReflectionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReflectionRequest {
    #[prost(string, tag = "1")]
    pub host: String,
    #[prost(oneof = "Asked", tags = "3, 4, 5, 6, 7")]
    pub asked: Option<Asked>,
}

/// `ServerReflectionRequest.message_request`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Asked {
    #[prost(string, tag = "3")]
    FileByFilename(String),
    #[prost(string, tag = "4")]
    FileContainingSymbol(String),
    #[prost(message, tag = "5")]
    FileContainingExtension(ExtensionRequest),
    #[prost(string, tag = "6")]
    AllExtensionNumbersOfType(String),
    #[prost(string, tag = "7")]
    ListServices(String),
}

/// `ExtensionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExtensionRequest {
    #[prost(string, tag = "1")]
    pub containing_type: String,
    #[prost(int32, tag = "2")]
    pub extension_number: i32,
}

/// `ServerReflectionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReflectionResponse {
    #[prost(string, tag = "1")]
    pub valid_host: String,
    #[prost(message, optional, tag = "2")]
    pub original_request: Option<ReflectionRequest>,
    #[prost(oneof = "Answer", tags = "4, 5, 6, 7")]
    pub answer: Option<Answer>,
}

/// `ServerReflectionResponse.message_response`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Answer {
    #[prost(message, tag = "4")]
    Files(FileDescriptorResponse),
    #[prost(message, tag = "5")]
    ExtensionNumbers(ExtensionNumberResponse),
    #[prost(message, tag = "6")]
    Services(ListServiceResponse),
    #[prost(message, tag = "7")]
    Error(ErrorResponse),
}

/// `FileDescriptorResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileDescriptorResponse {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub file_descriptor_proto: Vec<Vec<u8>>,
}

/// `ExtensionNumberResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExtensionNumberResponse {
    #[prost(string, tag = "1")]
    pub base_type_name: String,
    #[prost(int32, repeated, tag = "2")]
    pub extension_number: Vec<i32>,
}

/// `ListServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListServiceResponse {
    #[prost(message, repeated, tag = "1")]
    pub service: Vec<ServiceResponse>,
}

/// `ServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceResponse {
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `ErrorResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorResponse {
    #[prost(int32, tag = "1")]
    pub error_code: i32,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// The descriptors, indexed by file name and by every symbol they define.
#[derive(Debug, Default)]
pub struct Descriptors {
    files: HashMap<String, (Vec<u8>, Vec<String>)>,
    symbols: HashMap<String, String>,
    services: Vec<String>,
}

impl Descriptors {
    /// Index a serialized `FileDescriptorSet`; its services are the ones listed.
    ///
    /// # Errors
    ///
    /// The bytes are not a `FileDescriptorSet`.
    pub fn from_set(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        let set = FileDescriptorSet::decode(bytes)?;
        let mut descriptors = Descriptors::default();
        for file in set.file {
            descriptors.index(&file);
        }
        descriptors.services.sort();
        Ok(descriptors)
    }

    fn index(&mut self, file: &FileDescriptorProto) {
        let name = file.name().to_owned();
        let package = file.package();
        let qualified = |symbol: &str| {
            if package.is_empty() {
                symbol.to_owned()
            } else {
                format!("{package}.{symbol}")
            }
        };
        for message in &file.message_type {
            self.index_message(&qualified(message.name()), message, &name);
        }
        for enumeration in &file.enum_type {
            self.symbols
                .insert(qualified(enumeration.name()), name.clone());
        }
        for service in &file.service {
            let full = qualified(service.name());
            for method in &service.method {
                self.symbols
                    .insert(format!("{full}.{}", method.name()), name.clone());
            }
            self.symbols.insert(full.clone(), name.clone());
            self.services.push(full);
        }
        let dependencies = file.dependency.clone();
        self.files
            .insert(name, (file.encode_to_vec(), dependencies));
    }

    fn index_message(&mut self, full: &str, message: &DescriptorProto, file: &str) {
        self.symbols.insert(full.to_owned(), file.to_owned());
        for nested in &message.nested_type {
            self.index_message(&format!("{full}.{}", nested.name()), nested, file);
        }
        for enumeration in &message.enum_type {
            self.symbols
                .insert(format!("{full}.{}", enumeration.name()), file.to_owned());
        }
    }

    /// The file `name` and every file it depends on, each once, the file first.
    fn with_dependencies(&self, name: &str) -> Option<Vec<Vec<u8>>> {
        self.files.get(name)?;
        let mut seen = BTreeSet::new();
        let mut order = Vec::new();
        let mut next = vec![name.to_owned()];
        while let Some(file) = next.pop() {
            if !seen.insert(file.clone()) {
                continue;
            }
            if let Some((bytes, dependencies)) = self.files.get(&file) {
                order.push(bytes.clone());
                next.extend(dependencies.iter().rev().cloned());
            }
        }
        Some(order)
    }

    /// The answer to one serialized `ServerReflectionRequest`, serialized.
    #[must_use]
    pub fn answer(&self, request: &[u8]) -> Vec<u8> {
        let Ok(asked) = ReflectionRequest::decode(request) else {
            return error(None, INVALID_ARGUMENT, "not a ServerReflectionRequest");
        };
        let files = |name: Option<&String>, what: &str| match name
            .and_then(|name| self.with_dependencies(name))
        {
            Some(files) => Answer::Files(FileDescriptorResponse {
                file_descriptor_proto: files,
            }),
            None => not_found(what),
        };
        let answer = match &asked.asked {
            Some(Asked::FileByFilename(name)) => files(Some(name), "file"),
            Some(Asked::FileContainingSymbol(symbol)) => files(self.symbols.get(symbol), "symbol"),
            Some(Asked::FileContainingExtension(_)) => not_found("extension"),
            Some(Asked::AllExtensionNumbersOfType(name)) if self.symbols.contains_key(name) => {
                Answer::ExtensionNumbers(ExtensionNumberResponse {
                    base_type_name: name.clone(),
                    extension_number: Vec::new(),
                })
            }
            Some(Asked::AllExtensionNumbersOfType(_)) => not_found("type"),
            Some(Asked::ListServices(_)) => Answer::Services(ListServiceResponse {
                service: self
                    .services
                    .iter()
                    .map(|name| ServiceResponse { name: name.clone() })
                    .collect(),
            }),
            None => {
                return error(Some(asked), INVALID_ARGUMENT, "the request asks nothing");
            }
        };
        ReflectionResponse {
            valid_host: asked.host.clone(),
            original_request: Some(asked),
            answer: Some(answer),
        }
        .encode_to_vec()
    }
}

fn not_found(what: &str) -> Answer {
    Answer::Error(ErrorResponse {
        error_code: NOT_FOUND,
        error_message: format!("no such {what}"),
    })
}

fn error(asked: Option<ReflectionRequest>, code: i32, message: &str) -> Vec<u8> {
    ReflectionResponse {
        valid_host: asked.as_ref().map(|a| a.host.clone()).unwrap_or_default(),
        original_request: asked,
        answer: Some(Answer::Error(ErrorResponse {
            error_code: code,
            error_message: message.to_owned(),
        })),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{MethodDescriptorProto, ServiceDescriptorProto};

    fn set() -> Descriptors {
        let base = FileDescriptorProto {
            name: Some("a/base.proto".into()),
            package: Some("a".into()),
            message_type: vec![DescriptorProto {
                name: Some("Date".into()),
                nested_type: vec![DescriptorProto {
                    name: Some("Part".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let service = FileDescriptorProto {
            name: Some("a/service.proto".into()),
            package: Some("a.v1".into()),
            dependency: vec!["a/base.proto".into()],
            service: vec![ServiceDescriptorProto {
                name: Some("Registry".into()),
                method: vec![MethodDescriptorProto {
                    name: Some("Register".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = FileDescriptorSet {
            file: vec![base, service],
        }
        .encode_to_vec();
        Descriptors::from_set(&bytes).unwrap()
    }

    fn ask(descriptors: &Descriptors, asked: Asked) -> Answer {
        let request = ReflectionRequest {
            host: String::new(),
            asked: Some(asked),
        };
        ReflectionResponse::decode(&descriptors.answer(&request.encode_to_vec())[..])
            .unwrap()
            .answer
            .unwrap()
    }

    #[test]
    fn services_are_listed_and_symbols_found_with_their_dependencies() {
        let descriptors = set();
        let Answer::Services(listed) = ask(&descriptors, Asked::ListServices(String::new())) else {
            panic!("no list");
        };
        assert_eq!(listed.service[0].name, "a.v1.Registry");
        for symbol in ["a.v1.Registry", "a.v1.Registry.Register"] {
            let Answer::Files(files) =
                ask(&descriptors, Asked::FileContainingSymbol(symbol.into()))
            else {
                panic!("{symbol}");
            };
            let names: Vec<String> = files
                .file_descriptor_proto
                .iter()
                .map(|bytes| {
                    FileDescriptorProto::decode(&bytes[..])
                        .unwrap()
                        .name()
                        .to_owned()
                })
                .collect();
            assert_eq!(names, ["a/service.proto", "a/base.proto"]);
        }
        let Answer::Files(nested) = ask(
            &descriptors,
            Asked::FileContainingSymbol("a.Date.Part".into()),
        ) else {
            panic!("nested");
        };
        assert_eq!(nested.file_descriptor_proto.len(), 1);
    }

    #[test]
    fn what_does_not_exist_is_not_found() {
        let descriptors = set();
        for asked in [
            Asked::FileContainingSymbol("a.v1.Nothing".into()),
            Asked::FileByFilename("b.proto".into()),
            Asked::AllExtensionNumbersOfType("a.Nothing".into()),
        ] {
            let Answer::Error(error) = ask(&descriptors, asked) else {
                panic!("found");
            };
            assert_eq!(error.error_code, NOT_FOUND);
        }
    }
}
