package router

import (
	"errors"
	"fmt"
	"strings"
)

// MQTT topics. The NATS server's MQTT gateway turns the topic of a PUBLISH
// into a NATS subject, and an ingress declared with an MQTT topic filter
// reads the subjects its topics become. The mapping is the server's:
//
//   - "/" separates levels, as "." separates subject tokens:
//     dc1/rack-1/srv-1-3/metrics is dc1.rack-1.srv-1-3.metrics;
//   - a "." within a level becomes "//": srv.7 is the token srv//7;
//   - an empty level (a leading, trailing or doubled "/") becomes the
//     token "/": dc1//metrics is dc1./.metrics;
//   - in filters, + and # become * and >.
//
// Spaces and other white space are not allowed in a topic.

// TopicSubject returns the NATS subject pattern of an MQTT topic filter (a
// topic name is a filter without wildcards).
func TopicSubject(filter string) (string, error) {
	if filter == "" {
		return "", errors.New("topic is empty")
	}
	levels := strings.Split(filter, "/")
	tokens := make([]string, len(levels))
	for i, l := range levels {
		switch {
		case l == "":
			tokens[i] = "/"
		case l == "+":
			tokens[i] = "*"
		case l == "#":
			if i != len(levels)-1 {
				return "", fmt.Errorf("topic %s: # must be the last level", quote(filter))
			}
			tokens[i] = ">"
		case strings.ContainsAny(l, "+#"):
			return "", fmt.Errorf("topic %s: level %d: + and # must be a whole level", quote(filter), i)
		case strings.ContainsAny(l, " \t\r\n\f\x00\x7f"):
			return "", fmt.Errorf("topic %s: level %d has white space or a control character, which the MQTT gateway refuses", quote(filter), i)
		default:
			tokens[i] = strings.ReplaceAll(l, ".", "//")
		}
	}
	return strings.Join(tokens, "."), nil
}

// SubjectTopic returns the MQTT topic a subject came from (or would go
// to): the inverse of [TopicSubject] for topic names.
func SubjectTopic(subject string) string {
	tokens := strings.Split(subject, ".")
	for i, t := range tokens {
		tokens[i] = topicLevel(t)
	}
	return strings.Join(tokens, "/")
}

// topicLevel returns the MQTT topic level a subject token came from.
func topicLevel(token string) string {
	if token == "/" {
		return ""
	}
	return strings.ReplaceAll(token, "//", ".")
}
