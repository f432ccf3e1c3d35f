package router

import "testing"

func TestSubjectWithin(t *testing.T) {
	tests := []struct {
		sub, p string
		want   bool
	}{
		{"a.b", "a.b", true},
		{"a.b", "a.*", true},
		{"a.*", "a.*", true},
		{"a.*", "a.b", false},
		{"a.b.c", "a.>", true},
		{"a.>", "a.>", true},
		{"a.*.c", "a.>", true},
		{"a", "a.>", false},
		{"a.>", "a.*", false},
		{"a.>", "a.*.>", false},
		{"a.b.>", "a.*.>", true},
		{"a.b", "a.b.c", false},
		{"a.b.c", "a.b", false},
		{">", "a.>", false},
		{"a.b", ">", true},
		{"*.b", "a.b", false},
		{"a..b", "a.>", false},
		{"a.b", "$JS.>", false},
	}
	for _, tt := range tests {
		if got := SubjectWithin(tt.sub, tt.p); got != tt.want {
			t.Errorf("SubjectWithin(%q, %q) = %v, want %v", tt.sub, tt.p, got, tt.want)
		}
	}
}

func TestValidateReplySubject(t *testing.T) {
	for _, s := range []string{"_INBOX.x", "_INBOX.x.y", "_INBOX_client.x", "_INBOX_a-b_c.1"} {
		if err := ValidateReplySubject(s); err != nil {
			t.Errorf("ValidateReplySubject(%q) = %v", s, err)
		}
	}
	for _, s := range []string{"", "_INBOX", "_INBOX_x", "_INBOX_.x", "_INBOXx.y", "_INBOX_a$.x", "x._INBOX.y", "_INBOX.*", "_INBOX.>", "$JS.API.INFO", "twinflow.in.a.b.c"} {
		if err := ValidateReplySubject(s); err == nil {
			t.Errorf("ValidateReplySubject(%q) = nil, want an error", s)
		}
	}
}
