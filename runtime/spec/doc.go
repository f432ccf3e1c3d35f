// Package spec reads the module spec: the YAML file that tells a Twinflow
// worker which endpoints serve which function types, which NATS subjects
// are ingresses and how their messages are routed, and which egresses
// functions may publish to.
//
// # Format
//
// All sections are optional; an empty file is a valid empty module (only
// the direct ingress, no endpoints).
//
//	endpoints:
//	  - functions: datacenter/*        # "namespace/name", or "namespace/*" for a whole namespace
//	    url: http://127.0.0.1:8000     # http:// or https://, required
//	    timeout: 10s                   # per call; default 30s
//	    maxBatchAddresses: 256         # addresses per call; default 256
//	    maxBatchMessages: 128          # messages per address in one call; default 128
//	    maxInFlight: 8                 # concurrent calls to this endpoint; default 8
//	    maxAttempts: 20                # dead-letter a batch after 20 failed attempts; default: no limit
//	    maxAge: 1h                     # dead-letter a batch failing for an hour; default: no limit
//	    tls:                           # https:// endpoints only; optional
//	      ca: certs/ca.pem             # CAs that verify the endpoint; default the system's
//	      cert: certs/runtime.pem      # client certificate for mutual TLS, with
//	      key: certs/runtime-key.pem   # its key; relative to the spec file
//
//	ingresses:
//	  - name: metrics                  # [A-Za-z0-9_-]+, unique; names the JetStream stream
//	    subject: datacenter.metrics.*.*  # NATS subject pattern with * and >
//	    typename: datacenter/ServerMetricReport  # or typenameHeader: X-Type
//	    targets:                       # one address per target: fan-out
//	      - function: datacenter/server
//	        id: { subjectToken: 3 }    # or { header: X-Server } or { jsonField: server.id }
//
//	egresses:
//	  - name: alerts                   # [A-Za-z0-9_-]+, unique, not "reply"
//	    subject: datacenter.alerts     # records with a key go to datacenter.alerts.<key>
//	    delivery: exactly-once         # or at-least-once; default exactly-once
//
//	  - name: devices                  # an ingress of MQTT topics (the embedded server's MQTT gateway)
//	    topic: dc1/+/+/metrics         # MQTT topic filter with + and #, instead of subject
//	    typename: datacenter/ServerMetricReport  # required: MQTT messages carry no headers
//	    targets:
//	      - function: datacenter/server
//	        id: { subjectToken: 2 }    # topic level 2, counted from 0
//
//	users:                             # NATS identities of the embedded server
//	  - name: sensors                  # [A-Za-z0-9_-]+, not runtime or client
//	    ingresses: [metrics]           # may publish to these ("direct": the direct ingress)
//	    egresses: [alerts]             # may subscribe to these and read their streams
//	    publish: [twinflow.in.datacenter.server.>]  # more subjects within ingresses
//	    subscribe: [datacenter.alerts.>]            # more subjects within egresses
//
//	deadLetters:
//	  maxAge: 720h                     # keep dead letters 30 days at most; the default
//	  maxBytes: 1GiB                   # and 1 GiB at most; the default; at least 2MiB
//
//	mqtt:                              # turns the embedded server's MQTT gateway on
//	  host: 127.0.0.1                  # default 127.0.0.1; beyond loopback it needs tls
//	  port: 1883                       # default 1883
//	  tls: { cert: mqtt.pem, key: mqtt-key.pem, clientCA: devices-ca.pem }  # clientCA optional
//	  devices:                         # default: one, "device", for every ingress of topics
//	    - name: sensors                # user name; password in <data>/secrets/mqtt/sensors.password
//	      ingresses: [devices]         # may publish to these ingresses' topics
//	      topics: [dc1/rack-1/+/metrics]  # and these, within ingresses
//
//	descriptors:                       # protobuf FileDescriptorSets, relative to the spec file
//	  - gen/datacenter.binpb           # what buf build -o gen/datacenter.binpb writes
//
// # Endpoints
//
// A function type is served by the endpoint that names it exactly, else by
// the one that names its namespace with "namespace/*". No two endpoints may
// name the same thing. Every ingress target must be served by an endpoint.
//
// Failures are waited out by default. A call that gets no answer (the
// endpoint is down or being redeployed, a timeout, an HTTP 5xx) marks the
// endpoint unreachable: its addresses wait, their backlog moves out of
// memory into the store, and the endpoint is probed (backoff up to 5 s)
// until it answers. An address whose function reports a retryable error is
// retried with backoff (up to 30 s). Neither is ever dead-lettered unless
// maxAttempts or maxAge says so; a terminal error is dead-lettered at once.
//
// # Ingresses
//
// Each ingress reads the NATS subjects matching its pattern (through a
// JetStream stream named after the ingress). Subject patterns of different
// ingresses may not overlap, may not start with "$", and may not overlap the
// subjects Twinflow uses: twinflow.in.> and twinflow.envelope (the direct
// ingress, which needs no configuration) and twinflow.dlq.> (dead letters).
//
// The message typename is the fixed typename, or the value of the header
// named by typenameHeader, or, when neither is given, of the
// Twinflow-Typename header. Typenames are "namespace/name".
//
// Each target names a function type and where the id of the receiving
// address comes from, exactly one of:
//
//   - subjectToken: the 0-based index of a subject token. With the pattern
//     datacenter.metrics.*.*, token 3 of datacenter.metrics.eu1.srv-7 is
//     srv-7. The index must lie within the pattern (or its > tail).
//   - header: the value of a message header.
//   - jsonField: a field of the JSON payload, with dots between the keys of
//     nested objects and array indexes ("server.id", "servers.0.id"). A
//     string is the id as it is, a number is the id as written; objects,
//     arrays, booleans and null are errors.
//
// A message that cannot be routed (no id, no typename, bad JSON, ...) goes
// to the dead-letter subject twinflow.dlq.ingress with the reason in its
// headers; other messages keep flowing.
//
// An ingress with a topic instead of a subject reads MQTT topics, which the
// MQTT gateway turns into subjects (dc1/rack-1/srv-1-3/metrics becomes
// dc1.rack-1.srv-1-3.metrics; a "." in a level becomes "//", an empty
// level "/"). Its subjectToken ids are topic levels as the device wrote
// them, and a message whose level is empty is dead-lettered. It needs a
// fixed typename.
//
// # Egresses
//
// Functions publish records to egresses by name. exactly-once delivery
// publishes a record once the checkpoint holding it completes, so it shows
// up with checkpoint latency and is never duplicated; at-least-once
// publishes it right away and may publish it again after a crash. A
// record's optional key is appended to the subject as one more token. The
// egress subjects may not overlap each other or the ingress subjects. The
// egress named "reply" is built in: it answers the NATS request a message
// came with.
//
// # Users
//
// An embedded NATS server accepts only identities with an nkey, generated
// into the data dir on first start: the runtime, the client identity
// (publishes to every ingress, reads every egress and the dead letters),
// and each user listed here, with its own credentials file
// <data>/secrets/users/<name>.nk and its own reply inbox prefix
// _INBOX_<name>. A user may publish only to the ingresses and subjects it
// lists (each within an ingress) and subscribe only to the egresses and
// subjects it lists (each within an egress). See docs/security.md.
//
// # Dead letters
//
// Messages that cannot be routed, batches that failed for good and egress
// records that could not be published are kept in the JetStream stream
// TWINFLOW_DLQ (subjects twinflow.dlq.>). deadLetters bounds it by age and by
// size; at either bound the oldest dead letters are removed to make room
// (JetStream's DiscardOld), so dead letters never block anything. Sizes are
// a number of bytes, or a number with KiB, MiB, GiB, TiB (powers of 1024;
// KB, MB, GB, TB are powers of 1024 too, as for -memory). The runtime
// exports how many dead letters the bounds removed as
// twinflow_dead_letters_discarded_total.
//
// # MQTT
//
// The mqtt section turns on the embedded NATS server's MQTT gateway (so does
// twinflow run -mqtt-port). Each device identity connects with its name and
// a password made into the data dir, over MQTT only, and may publish only
// to the topics of the ingresses and topics it lists, each an ingress with
// a fixed typename, and subscribe to nothing.
//
// # Descriptors
//
// descriptors lists the FileDescriptorSet files (what buf build -o
// FILE.binpb writes; protoc --descriptor_set_out --include_imports too)
// that describe the protobuf messages of the module's functions, whose
// typenames are "proto/<full message name>". The runtime builds its message
// types from them, the well-known types and Twinflow's own messages, so
// that its admin API, its console and the command line show those messages
// as JSON and take them as JSON; it serves them to clients with
// ListFunctionTypes. A set must hold the files its files import, except the
// well-known types and Twinflow's; a file in several sets must be the same
// in each, and no two files may define the same name. The files are read
// when the runtime starts, which refuses a missing file, one that is not a
// FileDescriptorSet, an import no set holds and conflicting definitions,
// naming the file.
//
// # Errors
//
// Every problem is reported with its file, line and field path, all at
// once, for example:
//
//	module.yaml:12: ingresses[0].targets[1].id: exactly one of subjectToken, header, jsonField is required
//
// Unknown fields are errors too. YAML anchors, aliases and merge keys (<<)
// may be used to share settings.
package spec
