package runtime

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/typedjson"
)

// Dead letters and their replay
//
// The dead letters are the stream TWINFLOW_DLQ. Replaying one publishes it
// again to the ingress it was meant for: an ingress dead letter to its
// original subject, with its headers; a function dead letter to the direct
// ingress of its target, with its typename. Egress records NATS refused
// have no ingress to go back to.
//
// Exactly once: the replay is published with the message id
// twinflow-dlq-replay-<deployment>-<sequence>, so that within the dedup
// window JetStream drops a second replay of the same dead letter, however
// it came about (two operators at once, a retry after a lost answer). The
// replay is then recorded in the dead-letter stream itself, on the subject
// twinflow.dlq.replayed.<sequence>, which later replays look up first, so
// that a replay asked for after the window is refused too. Only a replay
// whose record was lost (the runtime stopped between the two publishes)
// and that is asked for again after the window would be published twice.

// replayedSubjectPrefix is the subject of the replay records, followed by
// the dead letter's sequence.
const replayedSubjectPrefix = "twinflow.dlq.replayed."

// Bounds of the dead-letter queries.
const (
	defaultDeadLetterLimit = 50
	maxDeadLetterLimit     = 500
	deadLetterPreview      = 1024
	maxReplay              = 1000
)

// ReplayOfHeader names, on a replayed message, the sequence of the dead
// letter it replays.
const ReplayOfHeader = "Twinflow-Replay-Of"

func (a *adminService) ListDeadLetters(ctx context.Context, req *connect.Request[twinflowv1.ListDeadLettersRequest]) (*connect.Response[twinflowv1.ListDeadLettersResponse], error) {
	limit := int(req.Msg.GetLimit())
	switch {
	case limit < 0 || limit > maxDeadLetterLimit:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("limit %d is not within 0 to %d", limit, maxDeadLetterLimit))
	case limit == 0:
		limit = defaultDeadLetterLimit
	}
	stream, err := a.e.js.Stream(ctx, DeadLetterStream)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("stream %s: %w", DeadLetterStream, err))
	}
	// The replay records, one subject each: their number.
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(replayedSubjectPrefix+">"))
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("stream %s: %w", DeadLetterStream, err))
	}
	st := info.State
	replayed := uint64(len(st.Subjects))
	resp := &twinflowv1.ListDeadLettersResponse{Replayed: replayed}
	if st.Msgs > replayed {
		resp.Total = st.Msgs - replayed
	}
	seq := req.Msg.GetBefore()
	if seq == 0 || seq > st.LastSeq+1 {
		seq = st.LastSeq + 1
	}
	// Look at a bounded number of sequences per page: replay records and
	// deleted messages are skipped, and a page must not take forever.
	for budget := 4*limit + 100; seq > st.FirstSeq && seq > 1 && len(resp.DeadLetters) < limit && budget > 0; budget-- {
		seq--
		msg, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("reading dead letter %d: %w", seq, err))
		}
		if strings.HasPrefix(msg.Subject, replayedSubjectPrefix) {
			continue
		}
		dl := deadLetterOf(a.e.json, msg)
		if rec, err := stream.GetLastMsgForSubject(ctx, replayedSubjectPrefix+strconv.FormatUint(seq, 10)); err == nil {
			dl.ReplayedAtUnixMillis = rec.Time.UnixMilli()
		} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("reading the replay record of dead letter %d: %w", seq, err))
		}
		resp.DeadLetters = append(resp.DeadLetters, dl)
	}
	if seq > st.FirstSeq && seq > 1 {
		resp.NextBefore = seq
	}
	return connect.NewResponse(resp), nil
}

// deadLetterOf describes a message of the dead-letter stream.
func deadLetterOf(codec *typedjson.Codec, msg *jetstream.RawStreamMsg) *twinflowv1.DeadLetter {
	h := msg.Header
	dl := &twinflowv1.DeadLetter{
		Sequence: msg.Sequence, TimeUnixMillis: msg.Time.UnixMilli(), Subject: msg.Subject,
		Error: h.Get(router.ErrorHeader), Reason: h.Get(router.ErrorReasonHeader), OriginalSubject: h.Get(router.OriginalSubjectHeader),
		Target: h.Get(router.TargetHeader), Caller: h.Get(router.CallerHeader), Source: h.Get(router.SourceHeader),
		Typename: h.Get(router.TypenameHeader), Size: int64(len(msg.Data)), Headers: map[string]string{},
		Preview: msg.Data[:min(len(msg.Data), deadLetterPreview)],
	}
	for k := range h {
		dl.Headers[k] = h.Get(k)
	}
	if len(msg.Data) <= deadLetterPreview {
		dl.Json, _ = codec.Render(dl.Typename, msg.Data)
	}
	if subject, _, err := replayOf(msg); err != nil {
		dl.NotReplayable = err.Error()
	} else {
		dl.ReplaySubject = subject
	}
	return dl
}

// replayOf returns where a dead letter goes back to, and its headers there.
func replayOf(msg *jetstream.RawStreamMsg) (string, nats.Header, error) {
	h := msg.Header
	out := nats.Header{}
	switch msg.Subject {
	case router.DeadLetterSubject:
		orig := h.Get(router.OriginalSubjectHeader)
		if orig == "" {
			return "", nil, errors.New("it names no original subject")
		}
		for k, v := range h {
			switch k {
			case router.ErrorHeader, router.ErrorReasonHeader, router.OriginalSubjectHeader, nats.MsgIdHdr:
			default:
				out[k] = v
			}
		}
		return orig, out, nil
	case router.FunctionDeadLetterSubject:
		target := h.Get(router.TargetHeader)
		if target == "" {
			return "", nil, errors.New("an egress record without a valid destination: it goes nowhere until its egress is fixed")
		}
		ns, rest, _ := strings.Cut(target, "/")
		name, id, ok := strings.Cut(rest, "/")
		if !ok {
			return "", nil, fmt.Errorf("its target %q is not namespace/name/id", target)
		}
		subject, err := router.DirectSubject(ns+"/"+name, id)
		if err != nil {
			return "", nil, fmt.Errorf("its target %q: %w", target, err)
		}
		out.Set(router.TypenameHeader, h.Get(router.TypenameHeader))
		return subject, out, nil
	case router.EgressDeadLetterSubject:
		return "", nil, errors.New("an egress record NATS refused: it has no ingress to go back to")
	}
	return "", nil, fmt.Errorf("subject %s is not a dead-letter subject the runtime writes", msg.Subject)
}

func (a *adminService) ReplayDeadLetters(ctx context.Context, req *connect.Request[twinflowv1.ReplayDeadLettersRequest]) (*connect.Response[twinflowv1.ReplayDeadLettersResponse], error) {
	seqs := req.Msg.GetSequences()
	if len(seqs) == 0 || len(seqs) > maxReplay {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("give 1 to %d sequences, not %d", maxReplay, len(seqs)))
	}
	stream, err := a.e.js.Stream(ctx, DeadLetterStream)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("stream %s: %w", DeadLetterStream, err))
	}
	resp := &twinflowv1.ReplayDeadLettersResponse{}
	for _, seq := range seqs {
		resp.Results = append(resp.Results, a.replay(ctx, stream, seq))
	}
	replayed := 0
	for _, r := range resp.Results {
		if r.Outcome == twinflowv1.ReplayOutcome_REPLAY_OUTCOME_REPLAYED {
			replayed++
		}
	}
	a.e.log.Info("dead letters replayed", "asked", len(seqs), "replayed", replayed)
	return connect.NewResponse(resp), nil
}

// replay replays one dead letter; see the comment at the top.
func (a *adminService) replay(ctx context.Context, stream jetstream.Stream, seq uint64) *twinflowv1.ReplayResult {
	res := &twinflowv1.ReplayResult{Sequence: seq}
	fail := func(o twinflowv1.ReplayOutcome, format string, args ...any) *twinflowv1.ReplayResult {
		res.Outcome, res.Detail = o, fmt.Sprintf(format, args...)
		return res
	}
	msg, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return fail(twinflowv1.ReplayOutcome_REPLAY_OUTCOME_NOT_FOUND, "the stream %s holds no message %d", DeadLetterStream, seq)
	} else if err != nil {
		return fail(twinflowv1.ReplayOutcome_REPLAY_OUTCOME_FAILED, "reading it: %v", err)
	}
	if strings.HasPrefix(msg.Subject, replayedSubjectPrefix) {
		return fail(twinflowv1.ReplayOutcome_REPLAY_OUTCOME_NOT_REPLAYABLE, "it is the record of a replay, not a dead letter")
	}
	subject, hdr, err := replayOf(msg)
	if err != nil {
		return fail(twinflowv1.ReplayOutcome_REPLAY_OUTCOME_NOT_REPLAYABLE, "%v", err)
	}
	res.Subject = subject
	record := replayedSubjectPrefix + strconv.FormatUint(seq, 10)
	if rec, err := stream.GetLastMsgForSubject(ctx, record); err == nil {
		return fail(twinflowv1.ReplayOutcome_REPLAY_OUTCOME_ALREADY_REPLAYED, "replayed at %s", rec.Time.UTC().Format("2006-01-02 15:04:05 UTC"))
	} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fail(twinflowv1.ReplayOutcome_REPLAY_OUTCOME_FAILED, "reading its replay record: %v", err)
	}
	id := fmt.Sprintf("twinflow-dlq-replay-%s-%d", a.e.deployment, seq)
	hdr.Set(nats.MsgIdHdr, id)
	hdr.Set(ReplayOfHeader, strconv.FormatUint(seq, 10))
	ack, err := a.e.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: hdr, Data: msg.Data})
	if err != nil {
		return fail(twinflowv1.ReplayOutcome_REPLAY_OUTCOME_FAILED, "publishing to %s: %v", subject, err)
	}
	if ack.Duplicate {
		res.Outcome, res.Detail = twinflowv1.ReplayOutcome_REPLAY_OUTCOME_ALREADY_REPLAYED, "replayed moments ago: the stream dropped this one as a duplicate"
	} else {
		res.Outcome = twinflowv1.ReplayOutcome_REPLAY_OUTCOME_REPLAYED
	}
	rec := &nats.Msg{Subject: record, Header: nats.Header{}}
	rec.Header.Set(nats.MsgIdHdr, "twinflow-dlq-replayed-"+a.e.deployment+"-"+strconv.FormatUint(seq, 10))
	rec.Header.Set("Twinflow-Replayed-To", subject)
	rec.Header.Set("Twinflow-Replayed-Sequence", fmt.Sprintf("%s %d", ack.Stream, ack.Sequence))
	if _, err := a.e.js.PublishMsg(ctx, rec); err != nil {
		a.e.log.Warn("recording a dead letter's replay failed; a repeat within the dedup window is still dropped",
			"sequence", seq, "err", err)
	}
	return res
}
