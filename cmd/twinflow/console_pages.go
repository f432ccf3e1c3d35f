package main

import (
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// consolePages is the -console-page flag: NAME=DIR, repeatable.
type consolePages map[string]string

func (p *consolePages) String() string {
	var out []string
	for name, dir := range *p {
		out = append(out, name+"="+dir)
	}
	return strings.Join(out, ",")
}

func (p *consolePages) Set(v string) error {
	name, dir, ok := strings.Cut(v, "=")
	if !ok || name == "" || dir == "" {
		return fmt.Errorf("%q: want NAME=DIR", v)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if *p == nil {
		*p = consolePages{}
	}
	(*p)[name] = dir
	return nil
}

// fs returns the pages' file systems by name.
func (p consolePages) fs() map[string]fs.FS {
	out := make(map[string]fs.FS, len(p))
	for name, dir := range p {
		out[name] = os.DirFS(dir)
	}
	return out
}
