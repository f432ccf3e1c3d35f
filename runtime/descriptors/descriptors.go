// Package descriptors builds the registry of the protobuf messages a
// runtime or a client can read: the well-known types, Twinflow's own
// messages, and the messages of the FileDescriptorSets a module spec lists
// (what buf build -o FILE.binpb writes). Its types are dynamic
// (dynamicpb), made from the descriptors alone, so that no message's Go
// code needs to be linked into the binary reading it; and the registry is
// a value of its own, never protobuf's global one, so that what a binary
// can read depends on the module it runs, not on what it happens to link.
package descriptors

import (
	"fmt"
	"os"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/apipb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/sourcecontextpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/typepb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// builtins are the files every registry holds: a descriptor set may leave
// them out (buf build --exclude-imports), and where it holds one of them
// too, these win, so that a set built against another protobuf or
// Twinflow release does not conflict with them.
var builtins = []protoreflect.FileDescriptor{
	descriptorpb.File_google_protobuf_descriptor_proto,
	anypb.File_google_protobuf_any_proto,
	apipb.File_google_protobuf_api_proto,
	durationpb.File_google_protobuf_duration_proto,
	emptypb.File_google_protobuf_empty_proto,
	fieldmaskpb.File_google_protobuf_field_mask_proto,
	sourcecontextpb.File_google_protobuf_source_context_proto,
	structpb.File_google_protobuf_struct_proto,
	timestamppb.File_google_protobuf_timestamp_proto,
	typepb.File_google_protobuf_type_proto,
	wrapperspb.File_google_protobuf_wrappers_proto,
	twinflowv1.File_twinflow_v1_types_proto,
	twinflowv1.File_twinflow_v1_function_proto,
	twinflowv1.File_twinflow_v1_ingress_proto,
	twinflowv1.File_twinflow_v1_admin_proto,
}

// Set is one serialized FileDescriptorSet and the name its errors give it:
// its file's path, or where it came from.
type Set struct {
	Name string
	Data []byte
}

// Registry is the protobuf files and message types known, safe for
// concurrent use once built.
type Registry struct {
	files *protoregistry.Files
	types *protoregistry.Types
	// set is the FileDescriptorSet of the files the sets added to the
	// builtins, in dependency order, serialized.
	set []byte
}

// Builtin returns a registry of the builtin files alone: the well-known
// types and Twinflow's own messages.
func Builtin() *Registry {
	r, err := New()
	if err != nil {
		panic(fmt.Sprintf("descriptors: the builtin files do not register: %v", err))
	}
	return r
}

// Load reads the FileDescriptorSet files at paths and returns the registry
// of the builtins and their files. Errors name the file at fault.
func Load(paths []string) (*Registry, error) {
	sets := make([]Set, 0, len(paths))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("descriptor set %s: %w", p, err)
		}
		sets = append(sets, Set{Name: p, Data: data})
	}
	return New(sets...)
}

// New returns the registry of the builtins and the files of sets. A file
// may be in several sets (a shared import) if it is the same in each.
func New(sets ...Set) (*Registry, error) {
	r := &Registry{files: &protoregistry.Files{}, types: &protoregistry.Types{}}
	for _, fd := range builtins {
		if err := r.register(fd); err != nil {
			return nil, fmt.Errorf("builtin %s: %w", fd.Path(), err)
		}
	}
	b := &builder{r: r, files: map[string]origin{}, state: map[string]int{}}
	for _, s := range sets {
		if err := b.add(s); err != nil {
			return nil, err
		}
	}
	for _, s := range sets {
		var fds descriptorpb.FileDescriptorSet
		_ = proto.Unmarshal(s.Data, &fds) // add checked it
		for _, f := range fds.GetFile() {
			if err := b.build(f.GetName()); err != nil {
				return nil, err
			}
		}
	}
	set, err := proto.MarshalOptions{Deterministic: true}.Marshal(&descriptorpb.FileDescriptorSet{File: b.added})
	if err != nil {
		return nil, err
	}
	r.set = set
	return r, nil
}

// Types returns the message, enum and extension types of every file, for
// encoding/protojson's resolvers.
func (r *Registry) Types() *protoregistry.Types { return r.types }

// Files returns the registered files.
func (r *Registry) Files() *protoregistry.Files { return r.files }

// DescriptorSet returns the serialized FileDescriptorSet of the files the
// sets added, in dependency order: what a client needs besides the
// builtins to read the same messages. The caller must not change it.
func (r *Registry) DescriptorSet() []byte { return r.set }

// register adds a file and its types.
func (r *Registry) register(fd protoreflect.FileDescriptor) error {
	if err := r.files.RegisterFile(fd); err != nil {
		return err
	}
	return registerTypes(r.types, fd.Messages(), fd.Enums(), fd.Extensions())
}

func registerTypes(types *protoregistry.Types, msgs protoreflect.MessageDescriptors, enums protoreflect.EnumDescriptors, exts protoreflect.ExtensionDescriptors) error {
	for i := range enums.Len() {
		if err := types.RegisterEnum(dynamicpb.NewEnumType(enums.Get(i))); err != nil {
			return err
		}
	}
	for i := range exts.Len() {
		if err := types.RegisterExtension(dynamicpb.NewExtensionType(exts.Get(i))); err != nil {
			return err
		}
	}
	for i := range msgs.Len() {
		md := msgs.Get(i)
		// Map entries are no types of their own.
		if !md.IsMapEntry() {
			if err := types.RegisterMessage(dynamicpb.NewMessageType(md)); err != nil {
				return err
			}
		}
		if err := registerTypes(types, md.Messages(), md.Enums(), md.Extensions()); err != nil {
			return err
		}
	}
	return nil
}

// origin is a file of a set.
type origin struct {
	set  string
	file *descriptorpb.FileDescriptorProto
}

// builder adds the files of the sets to a registry, each after the files
// it imports, whatever their order in the sets.
type builder struct {
	r     *Registry
	files map[string]origin
	// state is 1 for a file being built (its imports are), 2 for one
	// built.
	state map[string]int
	added []*descriptorpb.FileDescriptorProto
}

// add gathers the files of one set.
func (b *builder) add(s Set) error {
	var fds descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(s.Data, &fds); err != nil {
		return fmt.Errorf("descriptor set %s: not a FileDescriptorSet (what buf build -o FILE.binpb writes): %v", s.Name, err)
	}
	if len(fds.GetFile()) == 0 {
		return fmt.Errorf("descriptor set %s: holds no files; is it a FileDescriptorSet (what buf build -o FILE.binpb writes)?", s.Name)
	}
	for _, f := range fds.GetFile() {
		name := f.GetName()
		if name == "" {
			return fmt.Errorf("descriptor set %s: not a FileDescriptorSet (what buf build -o FILE.binpb writes): it holds a file without a name", s.Name)
		}
		if _, err := b.r.files.FindFileByPath(name); err == nil {
			continue // a builtin: it wins
		}
		prev, ok := b.files[name]
		switch {
		case !ok:
			b.files[name] = origin{set: s.Name, file: f}
		case !proto.Equal(withoutSourceInfo(prev.file), withoutSourceInfo(f)):
			return fmt.Errorf("descriptor set %s: %s differs from the %s of descriptor set %s: conflicting definitions; build both sets from the same .proto files", s.Name, name, name, prev.set)
		}
	}
	return nil
}

// build registers the file name after its imports.
func (b *builder) build(name string) error {
	switch b.state[name] {
	case 2:
		return nil
	case 1:
		return fmt.Errorf("descriptor set %s: %s imports itself through its imports", b.files[name].set, name)
	}
	o, ok := b.files[name]
	if !ok {
		return nil // a builtin
	}
	b.state[name] = 1
	for _, dep := range o.file.GetDependency() {
		if _, isSet := b.files[dep]; !isSet {
			if _, err := b.r.files.FindFileByPath(dep); err != nil {
				return fmt.Errorf("descriptor set %s: %s imports %s, which no descriptor set holds: build the set with its imports (buf build without --exclude-imports), or list the set that holds it", o.set, name, dep)
			}
		}
		if err := b.build(dep); err != nil {
			return err
		}
	}
	fd, err := protodesc.NewFile(o.file, b.r.files)
	if err != nil {
		return fmt.Errorf("descriptor set %s: %s: %v", o.set, name, err)
	}
	if err := b.clash(fd); err != nil {
		return fmt.Errorf("descriptor set %s: %w", o.set, err)
	}
	if err := b.r.register(fd); err != nil {
		return fmt.Errorf("descriptor set %s: %s: %v; conflicting definitions: no two files may define the same name", o.set, name, conflict(err))
	}
	b.state[name] = 2
	b.added = append(b.added, o.file)
	return nil
}

// clash names the file, and its set, that already defines a name fd
// defines.
func (b *builder) clash(fd protoreflect.FileDescriptor) error {
	var names []protoreflect.FullName
	for i := range fd.Messages().Len() {
		names = append(names, fd.Messages().Get(i).FullName())
	}
	for i := range fd.Enums().Len() {
		names = append(names, fd.Enums().Get(i).FullName())
	}
	for i := range fd.Extensions().Len() {
		names = append(names, fd.Extensions().Get(i).FullName())
	}
	for i := range fd.Services().Len() {
		names = append(names, fd.Services().Get(i).FullName())
	}
	for _, n := range names {
		d, err := b.r.files.FindDescriptorByName(n)
		if err != nil {
			continue
		}
		other := d.ParentFile().Path()
		where := "a builtin file"
		if o, ok := b.files[other]; ok {
			where = "descriptor set " + o.set
		}
		return fmt.Errorf("%s defines %s, which %s of %s defines too: conflicting definitions; a name may be defined once", fd.Path(), n, other, where)
	}
	return nil
}

// conflict shortens protoregistry's conflict errors, which point at Go
// packages, to their first sentence.
func conflict(err error) string {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return msg
}

// withoutSourceInfo is f without its comments and positions, which two
// builds of the same file may not share.
func withoutSourceInfo(f *descriptorpb.FileDescriptorProto) *descriptorpb.FileDescriptorProto {
	c := proto.CloneOf(f)
	c.SourceCodeInfo = nil
	return c
}
