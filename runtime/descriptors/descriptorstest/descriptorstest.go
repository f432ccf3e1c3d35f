// Package descriptorstest describes a protobuf message, sensors.v1.Reading,
// that exists only as a descriptor: no Go code of it is generated or linked
// anywhere, so that tests see what a binary knows of a message from a
// descriptor set alone.
//
//	syntax = "proto3";
//	package sensors.v1;
//	import "google/protobuf/timestamp.proto";
//	message Reading {
//	  string sensor = 1;
//	  double celsius = 2;
//	  google.protobuf.Timestamp at = 3;
//	}
package descriptorstest

import (
	"math"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

// Reading's names.
const (
	// Path is the .proto file's path.
	Path = "sensors/v1/reading.proto"
	// Message is the full name of the message.
	Message = "sensors.v1.Reading"
	// Typename is the typename of its values.
	Typename = "proto/" + Message
)

// File returns the descriptor of sensors/v1/reading.proto.
func File() *descriptorpb.FileDescriptorProto {
	field := func(name string, n int32, t descriptorpb.FieldDescriptorProto_Type, typeName string) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{
			Name: proto.String(name), Number: proto.Int32(n), JsonName: proto.String(name),
			Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: t.Enum(),
		}
		if typeName != "" {
			f.TypeName = proto.String(typeName)
		}
		return f
	}
	return &descriptorpb.FileDescriptorProto{
		Name:       proto.String(Path),
		Package:    proto.String("sensors.v1"),
		Dependency: []string{"google/protobuf/timestamp.proto"},
		Syntax:     proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Reading"),
			Field: []*descriptorpb.FieldDescriptorProto{
				field("sensor", 1, descriptorpb.FieldDescriptorProto_TYPE_STRING, ""),
				field("celsius", 2, descriptorpb.FieldDescriptorProto_TYPE_DOUBLE, ""),
				field("at", 3, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, ".google.protobuf.Timestamp"),
			},
		}},
	}
}

// Set returns the serialized FileDescriptorSet of File, without its
// import, as buf build --exclude-imports writes it.
func Set() []byte {
	b, err := proto.Marshal(&descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{File()}})
	if err != nil {
		panic(err)
	}
	return b
}

// Reading returns the encoding of a Reading with sensor and celsius set.
func Reading(sensor string, celsius float64) []byte {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendString(b, sensor)
	b = protowire.AppendTag(b, 2, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(celsius))
}
