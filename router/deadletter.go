package router

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxErrorHeader bounds the Twinflow-Error header of a dead letter.
const maxErrorHeader = 4096

// DeadLetter returns the subject and headers to publish msg with after err
// kept it from being routed; the payload is msg.Data unchanged. The subject
// is [DeadLetterSubject]. The headers are msg's, plus [ErrorHeader] (the
// error message), [ErrorReasonHeader] (its [Reason], see [ReasonOf]) and
// [OriginalSubjectHeader]. Headers named "Nats-..." other than Nats-Msg-Id
// are dropped: they are JetStream publish directives (expected sequence,
// rollup, TTL, batch) meant for the original publish, and would change how
// the dead letter is stored or make its publish fail.
func DeadLetter(err error, msg Message) (subject string, header map[string][]string) {
	header = make(map[string][]string, len(msg.Header)+3)
	for k, v := range msg.Header {
		if len(k) >= 5 && strings.EqualFold(k[:5], "Nats-") && !strings.EqualFold(k, "Nats-Msg-Id") {
			continue
		}
		header[k] = append([]string(nil), v...)
	}
	text := ""
	if err != nil {
		text = err.Error()
	}
	header[ErrorHeader] = []string{headerSafe(text, maxErrorHeader)}
	header[ErrorReasonHeader] = []string{string(ReasonOf(err))}
	header[OriginalSubjectHeader] = []string{headerSafe(msg.Subject, maxErrorHeader)}
	return DeadLetterSubject, header
}

// DeadLetterItem returns the subject and headers of the dead letter of
// item index of the batch msg, which err kept from being routed: those
// [DeadLetter] gives the batch, plus [BatchIndexHeader]. Its payload is the
// item's [Item.Envelope], which can be published again on
// [EnvelopeSubject] once corrected.
func DeadLetterItem(err error, msg Message, index int) (subject string, header map[string][]string) {
	subject, header = DeadLetter(err, Message{Subject: msg.Subject, Header: msg.Header})
	header[BatchIndexHeader] = []string{strconv.Itoa(index)}
	return subject, header
}

// ErrorText makes an error message a valid dead-letter header value of at
// most 4 KiB, saying how much was cut: a function's error message is the
// function's to choose, and NATS refuses a message whose headers exceed its
// maximum payload.
func ErrorText(s string) string {
	if len(s) <= maxErrorHeader {
		return headerSafe(s, maxErrorHeader)
	}
	return headerSafe(s, maxErrorHeader-40) + fmt.Sprintf(" … (cut; %d bytes in all)", len(s))
}

// headerSafe makes s a valid header value of at most max bytes: control
// characters (line breaks would end the header) become spaces.
func headerSafe(s string, max int) string {
	if len(s) > max {
		n := max
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	return strings.Map(func(r rune) rune {
		if isControl(r) {
			return ' '
		}
		return r
	}, s)
}
