// Command buildcaddy builds ./caddy from the pinned recipe in xcaddy.json
// with the xcaddy tool dependency of go.mod (`go tool xcaddy`).
//
// xcaddy.json names the Caddy and xcaddy versions and the plugins. go.mod
// must agree with it (it requires the same Caddy, and the xcaddy tool at
// the same version); a mismatch is an error rather than a silent second
// pin.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
)

type recipe struct {
	Caddy   string `json:"caddy"`
	Xcaddy  string `json:"xcaddy"`
	Plugins []struct {
		Module  string `json:"module"`
		Version string `json:"version"`
		Replace string `json:"replace"`
	} `json:"plugins"`
}

func main() {
	recipePath := flag.String("recipe", "xcaddy.json", "the build recipe")
	output := flag.String("o", "caddy", "the binary to write")
	flag.Parse()
	if err := run(*recipePath, *output); err != nil {
		fmt.Fprintln(os.Stderr, "buildcaddy:", err)
		os.Exit(1)
	}
}

func run(recipePath, output string) error {
	data, err := os.ReadFile(recipePath)
	if err != nil {
		return err
	}
	var r recipe
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("%s: %w", recipePath, err)
	}
	if r.Caddy == "" || r.Xcaddy == "" {
		return fmt.Errorf("%s: caddy and xcaddy versions are required", recipePath)
	}
	gomod, err := os.ReadFile(filepath.Join(filepath.Dir(recipePath), "go.mod"))
	if err != nil {
		return err
	}
	if err := agree(gomod, "github.com/caddyserver/caddy/v2", r.Caddy); err != nil {
		return err
	}
	if err := agree(gomod, "github.com/caddyserver/xcaddy", r.Xcaddy); err != nil {
		return err
	}
	out, err := filepath.Abs(output)
	if err != nil {
		return err
	}
	args := []string{"tool", "xcaddy", "build", r.Caddy, "--output", out}
	for _, p := range r.Plugins {
		spec := p.Module
		switch {
		case p.Replace != "":
			abs, err := filepath.Abs(filepath.Join(filepath.Dir(recipePath), p.Replace))
			if err != nil {
				return err
			}
			// A version is required: without one, go get asks the module
			// proxy for the module, which may refuse instead of saying
			// "not found".
			spec += "@v0.0.0=" + abs
		case p.Version != "":
			spec += "@" + p.Version
		}
		args = append(args, "--with", spec)
	}
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	fmt.Fprintln(os.Stderr, "buildcaddy: go", args)
	return cmd.Run()
}

// agree checks that go.mod requires module at version.
func agree(gomod []byte, module, version string) error {
	re := regexp.MustCompile(`(?m)^\s*(?:require\s+)?` + regexp.QuoteMeta(module) + `\s+(\S+)`)
	m := re.FindSubmatch(gomod)
	if m == nil {
		return fmt.Errorf("go.mod does not require %s; xcaddy.json pins %s", module, version)
	}
	if string(m[1]) != version {
		return fmt.Errorf("go.mod has %s %s but xcaddy.json pins %s: make them agree (go get %s@%s)", module, m[1], version, module, version)
	}
	return nil
}
