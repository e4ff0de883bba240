// Renders an Ollama Modelfile TEMPLATE with Go's text/template, the engine Ollama uses, on the
// fields Ollama passes (Messages with Role/Content/Thinking, System, Think, IsThinkSet).
// Input on stdin: {"template": "...", "data": {...}}; output: the rendered prompt, nothing else.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/template"
)

type Message struct {
	Role     string `json:"role"`
	Content  string `json:"content"`
	Thinking string `json:"thinking"`
}

type Values struct {
	Messages   []Message `json:"messages"`
	System     string    `json:"system"`
	Prompt     string    `json:"prompt"`
	Response   string    `json:"response"`
	Think      bool      `json:"think"`
	IsThinkSet bool      `json:"is_think_set"`
}

type Input struct {
	Template string `json:"template"`
	Data     Values `json:"data"`
}

func main() {
	var in Input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, "bad input:", err)
		os.Exit(2)
	}
	tmpl, err := template.New("modelfile").Parse(in.Template)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad template:", err)
		os.Exit(3)
	}
	if err := tmpl.Execute(os.Stdout, in.Data); err != nil {
		fmt.Fprintln(os.Stderr, "render failed:", err)
		os.Exit(4)
	}
}
