package runtime

import (
	"slices"
	"testing"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// TestMergePages merges the pages of three workers into one page of the
// cluster, with the next page's start when any worker has more.
func TestMergePages(t *testing.T) {
	page := func(next string, total int64, ids ...string) *twinflowv1.ListAddressesResponse {
		p := &twinflowv1.ListAddressesResponse{NextAfter: next, Total: total}
		for _, id := range ids {
			p.Addresses = append(p.Addresses, &twinflowv1.AddressEntry{Id: id})
		}
		return p
	}
	ids := func(p *twinflowv1.ListAddressesResponse) []string {
		var out []string
		for _, a := range p.GetAddresses() {
			out = append(out, a.GetId())
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		pages []*twinflowv1.ListAddressesResponse
		limit int
		want  []string
		next  string
		total int64
	}{
		{"all fit", []*twinflowv1.ListAddressesResponse{page("", 2, "b", "e"), page("", 1, "a"), page("", 0)}, 5,
			[]string{"a", "b", "e"}, "", 3},
		{"more than a page", []*twinflowv1.ListAddressesResponse{page("", 2, "b", "e"), page("", 2, "a", "c")}, 3,
			[]string{"a", "b", "c"}, "c", 4},
		{"one worker has more", []*twinflowv1.ListAddressesResponse{page("b", 9, "a", "b"), page("", 0)}, 2,
			[]string{"a", "b"}, "b", 9},
		{"an address listed twice", []*twinflowv1.ListAddressesResponse{page("", 2, "a", "b"), page("", 1, "b")}, 5,
			[]string{"a", "b"}, "", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := mergePages(tc.pages, tc.limit)
			if !slices.Equal(ids(got), tc.want) || got.GetNextAfter() != tc.next || got.GetTotal() != tc.total {
				t.Errorf("merged %v next %q total %d; want %v next %q total %d", ids(got), got.GetNextAfter(), got.GetTotal(), tc.want, tc.next, tc.total)
			}
		})
	}
}
