using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace QubesFirewall.Engine.Tests;

/// <summary>
/// The engine's namespaces depend one way: each only on the layers below it (Model ← Formats ← ... ← Backends ←
/// Deployment ← Planning; the backends on Model, Formats and the helpers below them). Read from the source: for
/// every file, the engine types it names through its usings, a qualified name or the holes of an interpolated
/// string. Any dependency upward fails, naming the files and types that make it; there is no list of exceptions.
/// </summary>
public sealed partial class NamespaceLayerTests(ITestOutputHelper output)
{
    /// <summary>Lowest first. Namespaces of one layer may use each other.</summary>
    private static readonly string[][] Layers =
    [
        ["(root)", "Validation", "Io", "Trust"], // error ids and exception; name grammar; atomic files; bounded reads of what qubes send
        ["Model"],                               // qubes, rules, declarations, chains, edits, first-match evaluation
        ["Formats"],                             // firewall.xml, qubes.xml, qrexec policy, QubesDB entries
        ["Scripts"],                             // generated nft and shell text
        ["Persistence"],                         // hook files in qubes (managed blocks)
        ["Backends", "AdminApi"],                // the backend interface, the offline root and the selector; the live backend
        ["Deployment"],                          // plans: their typed steps, the one executor (Rollout) and its results
        ["Planning", "Agent"],                   // planners (they make plans) and audits; the agent's features and delivery
        ["Configuration", "Network"],            // configuration as code; the network view
    ];

    private static string EngineSource
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "QubesFirewall.slnx"))) return Path.Combine(dir.FullName, "src", "QubesFirewall.Engine");
            throw new InvalidOperationException("repository root not found");
        }
    }

    private static int LayerOf(string ns)
    {
        for (var i = 0; i < Layers.Length; i++)
            if (Layers[i].Contains(ns)) return i;
        return -1;
    }

    /// <summary>namespace → namespace it uses → the types that make the edge (file: type).</summary>
    internal static SortedDictionary<string, SortedDictionary<string, SortedSet<string>>> Dependencies() =>
        Dependencies(Directory.EnumerateFiles(EngineSource, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Split(Path.DirectorySeparatorChar).Any(p => p is "bin" or "obj"))
            .Select(f => (Path.GetRelativePath(EngineSource, f), File.ReadAllText(f))));

    /// <summary>The same for the given files (name, C# source).</summary>
    internal static SortedDictionary<string, SortedDictionary<string, SortedSet<string>>> Dependencies(IEnumerable<(string Name, string Source)> sources)
    {
        var files = sources.Select(f => (f.Name, Text: Strip(f.Source))).ToList();
        var typeNamespaces = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        foreach (var (_, text) in files)
            foreach (Match m in TypeDeclaration().Matches(text))
                (typeNamespaces.TryGetValue(m.Groups[1].Value, out var set) ? set : typeNamespaces[m.Groups[1].Value] = []).Add(NamespaceOf(text));
        var graph = new SortedDictionary<string, SortedDictionary<string, SortedSet<string>>>(StringComparer.Ordinal);
        foreach (var (name, text) in files)
        {
            var ns = NamespaceOf(text);
            var edges = graph.TryGetValue(ns, out var e) ? e : graph[ns] = new(StringComparer.Ordinal);
            var usings = Using().Matches(text).Select(m => m.Groups[1].Value).ToHashSet(StringComparer.Ordinal);
            void Add(string to, string type)
            {
                if (to == ns || to == "(root)") return;
                (edges.TryGetValue(to, out var s) ? s : edges[to] = new(StringComparer.Ordinal)).Add($"{name}: {type}");
            }
            foreach (var word in Word().Matches(text).Select(m => m.Value).Distinct(StringComparer.Ordinal))
                if (typeNamespaces.TryGetValue(word, out var homes) && !homes.Contains(ns))
                    foreach (var home in homes.Where(usings.Contains)) Add(home, word);
            foreach (Match m in Qualified().Matches(text))
                if (typeNamespaces.TryGetValue(m.Groups[2].Value, out var homes) && homes.Contains(m.Groups[1].Value))
                    Add(m.Groups[1].Value, m.Groups[2].Value);
        }
        return graph;
    }

    /// <summary>The scan itself: each way of naming a type of another namespace makes an edge, words in comments and strings do not.</summary>
    [Fact]
    public void The_scan_sees_every_way_of_using_a_type()
    {
        var graph = Dependencies([
            ("Planning/P.cs", "namespace QubesFirewall.Engine.Planning;\npublic static class P { }\npublic sealed record Q;\npublic static class R { public static string S => \"\"; }\n"),
            ("Model/ByUsing.cs", "using QubesFirewall.Engine.Planning;\nnamespace QubesFirewall.Engine.Model;\nclass A { Q? q; }\n"),
            ("Formats/ByName.cs", "namespace QubesFirewall.Engine.Formats;\nclass B { object o = Planning.P.X; }\n"),
            ("Scripts/ByHole.cs", "namespace QubesFirewall.Engine.Scripts;\nclass C { string s = $\"x {Planning.R.S} y\"; }\n"),
            ("Io/ByStatic.cs", "using static QubesFirewall.Engine.Planning.R;\nnamespace QubesFirewall.Engine.Io;\nclass D { string s = S; }\n"),
            ("Trust/NotAUse.cs", "namespace QubesFirewall.Engine.Trust;\n// Planning.P and Q in a comment\nclass E { string s = \"Planning.P and Q in a string\"; }\n"),
        ]);
        Assert.Equal(["Model/ByUsing.cs: Q"], graph["Model"]["Planning"]);
        Assert.Equal(["Formats/ByName.cs: P"], graph["Formats"]["Planning"]);
        Assert.Equal(["Scripts/ByHole.cs: R"], graph["Scripts"]["Planning"]);
        Assert.Equal(["Io/ByStatic.cs: R"], graph["Io"]["Planning"]);
        Assert.Empty(graph["Trust"]);
    }

    [Fact]
    public void Every_namespace_is_in_a_layer()
    {
        var unplaced = Dependencies().Keys.Where(ns => LayerOf(ns) < 0).ToList();
        Assert.True(unplaced.Count == 0, "namespaces in no layer: " + string.Join(", ", unplaced));
    }

    [Fact]
    public void Namespaces_depend_only_on_lower_layers()
    {
        var graph = Dependencies();
        foreach (var (from, edges) in graph)
            output.WriteLine($"{from}: {string.Join(", ", edges.Keys)}");
        var problems = graph.SelectMany(g => g.Value.Where(e => LayerOf(e.Key) > LayerOf(g.Key))
                .Select(e => $"{g.Key} -> {e.Key} goes up a layer: {string.Join("; ", e.Value)}"))
            .ToList();
        Assert.True(problems.Count == 0, string.Join(Environment.NewLine, problems));
    }

    /// <summary>The engine asks a backend what it can do (IQubesBackend's members), never which class it is.</summary>
    [Fact]
    public void Only_the_backends_know_the_backend_classes()
    {
        var root = Path.GetDirectoryName(EngineSource)!;
        var problems = Directory.EnumerateFiles(root, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Split(Path.DirectorySeparatorChar).Any(p => p is "bin" or "obj" or "Backends" or "AdminApi"))
            .SelectMany(f => File.ReadAllLines(f).Select((line, i) => (f, line, i)))
            .Where(x => ClassTest().IsMatch(x.line))
            .Select(x => $"{Path.GetRelativePath(root, x.f)}:{x.i + 1}: {x.line.Trim()}")
            .ToList();
        Assert.True(problems.Count == 0, string.Join(Environment.NewLine, problems));
    }

    private static string NamespaceOf(string text)
    {
        var m = Namespace().Match(text);
        return m.Success ? (m.Groups[1].Success ? m.Groups[1].Value : "(root)") : "(root)";
    }

    /// <summary>
    /// Comments and string literals out, so words in them are not taken for uses; the holes of an interpolated
    /// string are code and stay.
    /// </summary>
    private static string Strip(string text) =>
        StringLiteral().Replace(Comment().Replace(text, ""), m => m.Value.StartsWith('$') || m.Value.StartsWith("@$", StringComparison.Ordinal)
            ? "\"" + string.Join(" ", Hole().Matches(m.Value).Select(h => h.Groups[1].Value)) + "\""
            : "\"\"");

    [GeneratedRegex(@"^namespace QubesFirewall\.Engine(?:\.(\w+))?;", RegexOptions.Multiline)]
    private static partial Regex Namespace();

    [GeneratedRegex(@"^using QubesFirewall\.Engine\.(\w+);", RegexOptions.Multiline)]
    private static partial Regex Using();

    [GeneratedRegex(@"\b(?:class|record|struct|interface|enum)\s+(?:struct\s+|class\s+)?([A-Z]\w*)")]
    private static partial Regex TypeDeclaration();

    [GeneratedRegex(@"\b[A-Z]\w*\b")]
    private static partial Regex Word();

    [GeneratedRegex(@"(?<![\w.])(?:QubesFirewall\.Engine\.)?([A-Z]\w*)\.([A-Z]\w*)")]
    private static partial Regex Qualified();

    [GeneratedRegex(@"//[^\n]*")]
    private static partial Regex Comment();

    [GeneratedRegex(@"@?\$?""(?:[^""\\\n]|\\.)*""")]
    private static partial Regex StringLiteral();

    [GeneratedRegex(@"(?<!\{)\{([^{}]+)\}")]
    private static partial Regex Hole();

    [GeneratedRegex(@"\b(?:is|as)\s+(?:not\s+)?(?:[\w.]+\.)?(?:OfflineRoot|AdminApiBackend)\b")]
    private static partial Regex ClassTest();
}
