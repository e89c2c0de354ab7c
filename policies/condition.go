package policies

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"

	"github.com/credbroker/credbroker/attest"
)

// CostLimit bounds the work one condition may do in one evaluation, in CEL
// cost units (roughly one per operation, and per byte or element for
// string and list operations). A condition that exceeds it fails to
// evaluate, with the error semantics documented in the package comment.
const CostLimit = 100_000

// MaxConditionLength is the longest `when` expression accepted, in
// characters.
const MaxConditionLength = 4096

// interruptCheckFrequency is how many comprehension iterations pass between
// checks of the context given to EvaluateContext.
const interruptCheckFrequency = 100

// Variables and fields visible to conditions. Selecting any other field of
// identity or request is a compile-time problem.
var (
	identityFields = []string{"claims", "method", "peer", "subject"}
	requestFields  = []string{"channel", "credential", "database", "host", "method", "path", "user"}
)

// condition is a compiled `when` expression.
type condition struct {
	text string
	prg  cel.Program
}

// conditionIssue is a compile problem within an expression; line is
// 1-based within the expression text, column 1-based.
type conditionIssue struct {
	line, column int
	message      string
}

// conditionEnv is the CEL environment every Compile checks conditions
// against. It is built once, on first use, and is immutable and safe for
// concurrent use thereafter.
var conditionEnv = sync.OnceValues(newEnv)

// newEnv returns the CEL environment conditions are checked against.
func newEnv() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("identity", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("request", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("now", cel.TimestampType),
		cel.CrossTypeNumericComparisons(true),
		cel.ParserExpressionSizeLimit(MaxConditionLength),
		cel.ASTValidators(fieldValidator{}),
	)
}

// compileCondition parses, type-checks and plans text.
func compileCondition(env *cel.Env, text string) (*condition, []conditionIssue) {
	checked, iss := env.Compile(text)
	if iss != nil && iss.Err() != nil {
		var out []conditionIssue
		seen := map[string]bool{}
		for _, e := range iss.Errors() {
			msg := strings.TrimSpace(strings.ReplaceAll(e.Message, " (in container '')", ""))
			key := fmt.Sprint(e.Location.Line(), e.Location.Column(), msg)
			if seen[key] || len(out) == 5 {
				continue
			}
			seen[key] = true
			out = append(out, conditionIssue{line: max(e.Location.Line(), 1), column: max(e.Location.Column(), 0) + 1, message: msg})
		}
		if len(out) == 0 {
			out = append(out, conditionIssue{line: 1, message: iss.Err().Error()})
		}
		return nil, out
	}
	if t := checked.OutputType(); !t.IsExactType(cel.BoolType) {
		msg := fmt.Sprintf("must be a boolean expression, not %s", t)
		if t.IsExactType(cel.DynType) {
			msg += " (compare explicitly, for example `... == true`)"
		}
		return nil, []conditionIssue{{line: 1, message: msg}}
	}
	prg, err := env.Program(checked,
		cel.EvalOptions(cel.OptOptimize),
		cel.CostLimit(CostLimit),
		cel.InterruptCheckFrequency(interruptCheckFrequency),
	)
	if err != nil {
		return nil, []conditionIssue{{line: 1, message: err.Error()}}
	}
	return &condition{text: text, prg: prg}, nil
}

// errNotBool reports a condition whose result is not a boolean; the type
// check makes it unreachable, but evaluation must not trust that.
var errNotBool = errors.New("condition did not yield a boolean")

// eval runs the condition, interruptible through ctx. A ctx that can never
// be done, such as context.Background(), takes the cheaper uninterruptible
// path; the cost limit bounds the work either way.
func (c *condition) eval(ctx context.Context, act *activation) (bool, error) {
	var (
		out any
		err error
	)
	if ctx.Done() == nil {
		out, _, err = c.prg.Eval(act)
	} else {
		out, _, err = c.prg.ContextEval(ctx, act)
	}
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, errNotBool
	}
	return bool(b), nil
}

// activation resolves the condition variables of one Input. The documents
// are built on first use and shared by every condition of one evaluation;
// a Set recycles activations, maps included, through a sync.Pool.
type activation struct {
	in          Input
	identity    map[string]any
	peer        map[string]any
	request     map[string]string
	now         ref.Val
	hasIdentity bool
	hasRequest  bool
}

var _ interpreter.Activation = (*activation)(nil)

func newActivation() any {
	return &activation{
		identity: make(map[string]any, 4),
		peer:     make(map[string]any, 3),
		request:  make(map[string]string, 5),
	}
}

// reset drops every reference to the Input so that a pooled activation
// keeps no caller data alive.
func (a *activation) reset() {
	a.in = Input{}
	clear(a.identity)
	clear(a.peer)
	clear(a.request)
	a.now = nil
	a.hasIdentity, a.hasRequest = false, false
}

// ResolveName implements interpreter.Activation.
func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "identity":
		if !a.hasIdentity {
			fillIdentity(a.identity, &a.in.Identity)
			if p := a.in.Identity.Peer; p != nil {
				fillIdentity(a.peer, p)
				a.identity["peer"] = a.peer
			}
			a.hasIdentity = true
		}
		return a.identity, true
	case "request":
		if !a.hasRequest {
			fillRequest(a.request, &a.in.Request)
			a.hasRequest = true
		}
		return a.request, true
	case "now":
		if a.now == nil {
			a.now = types.Timestamp{Time: a.in.Now}
		}
		return a.now, true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (a *activation) Parent() interpreter.Activation { return nil }

// fillIdentity sets the method, subject and claims of the `identity`
// document (or of its peer) in doc.
func fillIdentity(doc map[string]any, id *attest.Identity) {
	claims := id.Claims
	if claims == nil {
		claims = map[string]any{}
	}
	doc["method"] = id.Method
	doc["subject"] = id.Subject
	doc["claims"] = claims
}

// fillRequest sets the fields of the `request` document in doc.
func fillRequest(doc map[string]string, r *Request) {
	doc["channel"] = r.Channel
	doc["credential"] = r.Credential
	doc["method"] = r.Method
	doc["path"] = r.Path
	doc["host"] = r.Host
	doc["database"] = r.Database
	doc["user"] = r.User
}

// identityDoc is the `identity` document: method, subject, claims and,
// when present, peer (one level deep).
func identityDoc(id *attest.Identity) map[string]any {
	doc := make(map[string]any, 4)
	fillIdentity(doc, id)
	if id.Peer != nil {
		peer := make(map[string]any, 3)
		fillIdentity(peer, id.Peer)
		doc["peer"] = peer
	}
	return doc
}

// requestDoc is the `request` document.
func requestDoc(r *Request) map[string]string {
	doc := make(map[string]string, 7)
	fillRequest(doc, r)
	return doc
}

// Input returns the policy input document for in: the values conditions
// see, as JSON-compatible maps, for the audit log to record so that history
// can be re-evaluated against another Set:
//
//	{"identity": {"method", "subject", "claims", "peer"},
//	 "request": {"channel", "credential", "method", "path", "host", "database", "user"},
//	 "now": time.Time}
//
// The claims maps are shared with in, not copied. The document does not
// depend on the Set's policies; s may be nil.
func (s *Set) Input(in Input) map[string]any {
	if in.Now.IsZero() {
		in.Now = time.Now()
	}
	req := requestDoc(&in.Request)
	// Fields of one channel only are recorded where they are set.
	for _, k := range [...]string{"database", "user"} {
		if req[k] == "" {
			delete(req, k)
		}
	}
	return map[string]any{
		"identity": identityDoc(&in.Identity),
		"request":  req,
		"now":      in.Now,
	}
}

// fieldValidator rejects selections of fields that identity, identity.peer
// and request do not have, so that a typo fails at load rather than making
// a condition error on every request.
type fieldValidator struct{}

func (fieldValidator) Name() string { return "credbroker.fields" }

func (fieldValidator) Validate(_ *cel.Env, _ cel.ValidatorConfig, a *ast.AST, iss *cel.Issues) {
	ast.PreOrderVisit(a.Expr(), ast.NewExprVisitor(func(e ast.Expr) {
		if e.Kind() != ast.SelectKind {
			return
		}
		sel := e.AsSelect()
		var doc string
		var fields []string
		switch op := sel.Operand(); {
		case isIdent(op, "request"):
			doc, fields = "request", requestFields
		case isIdent(op, "identity"):
			doc, fields = "identity", identityFields
		case op.Kind() == ast.SelectKind && op.AsSelect().FieldName() == "peer" && isIdent(op.AsSelect().Operand(), "identity"):
			doc, fields = "identity.peer", identityFields
		default:
			return
		}
		if i := sort.SearchStrings(fields, sel.FieldName()); i < len(fields) && fields[i] == sel.FieldName() {
			return
		}
		iss.ReportErrorAtID(e.ID(), "%s has no field %q (fields: %s)", doc, sel.FieldName(), strings.Join(fields, ", "))
	}))
}

func isIdent(e ast.Expr, name string) bool {
	return e.Kind() == ast.IdentKind && e.AsIdent() == name
}
