// dotnet run --project tools/HelpBuilder -- <docsDir> <outDir> [--assembly <Name>]
//   reads <docsDir>/cmdlets/*.md (PlatyPS layout; the module page is skipped) and writes
//   <outDir>/<Name>.dll-Help.xml (Name defaults to QubesFirewall.PowerShell), then turns
//   <docsDir>/about/about_*.md into <outDir>/about_*.help.txt.
// Also accepted: <cmdletsDir> <outDir> [<aboutDir>], when the first folder holds the pages
// itself (no cmdlets/ inside); the about folder then defaults to <cmdletsDir>/../about.
// Exit codes: 0 written, 1 a doc is malformed (each problem printed as file:line: problem), 2 usage.
namespace QubesFirewall.HelpBuilder;

public static class Program
{
    public const string DefaultAssembly = "QubesFirewall.PowerShell";

    public static int Main(string[] args) => Run(args, Console.Out, Console.Error);

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var positional = new List<string>();
        var assembly = DefaultAssembly;
        for (var i = 0; i < args.Length; i++)
        {
            if (args[i] is "--assembly" && i + 1 < args.Length) assembly = args[++i];
            else if (args[i] is "-h" or "--help") return Usage(stdout, 0);
            else if (args[i].StartsWith("--", StringComparison.Ordinal)) return Usage(stderr, 2, $"unknown option {args[i]}");
            else positional.Add(args[i]);
        }
        if (positional.Count is < 2 or > 3) return Usage(stderr, 2);

        var (docsDir, outDir) = (positional[0], positional[1]);
        if (!Directory.Exists(docsDir))
        {
            stderr.WriteLine($"error: {docsDir}: no such folder");
            return 2;
        }
        string cmdletsDir, aboutDir;
        if (Directory.Exists(Path.Combine(docsDir, "cmdlets")))
        {
            if (positional.Count == 3) return Usage(stderr, 2, "an about folder is only taken with a cmdlets folder as the first argument");
            cmdletsDir = Path.Combine(docsDir, "cmdlets");
            aboutDir = Path.Combine(docsDir, "about");
        }
        else
        {
            cmdletsDir = docsDir;
            aboutDir = positional.Count == 3 ? positional[2] : Path.Combine(Path.GetFullPath(docsDir), "..", "about");
        }

        var set = CmdletDocParser.ParseDirectory(cmdletsDir);
        if (set.Errors.Count > 0)
        {
            foreach (var e in set.Errors) stderr.WriteLine($"error: {e.Message}");
            stderr.WriteLine($"HelpBuilder: {set.Errors.Count} malformed doc(s); no help written.");
            return 1;
        }
        if (set.Cmdlets.Count == 0)
            stderr.WriteLine($"warning: {cmdletsDir} documents no cmdlet; writing an empty help file.");

        Directory.CreateDirectory(outDir);
        var mamlPath = Path.Combine(outDir, assembly + ".dll-Help.xml");
        MamlWriter.Write(set.Cmdlets, mamlPath);
        stdout.WriteLine($"HelpBuilder: {set.Cmdlets.Count} cmdlet(s) → {mamlPath}");

        if (Directory.Exists(aboutDir))
        {
            foreach (var about in Directory.GetFiles(aboutDir, "about_*.md").Order(StringComparer.Ordinal))
                stdout.WriteLine($"HelpBuilder: {Path.GetFileName(about)} → {AboutConverter.ConvertFile(about, outDir)}");
        }
        return 0;
    }

    static int Usage(TextWriter w, int code, string? problem = null)
    {
        if (problem is not null) w.WriteLine($"error: {problem}");
        w.WriteLine("usage: HelpBuilder <docsDir> <outDir> [--assembly <Name>]");
        w.WriteLine("       HelpBuilder <cmdletsDir> <outDir> [<aboutDir>] [--assembly <Name>]");
        w.WriteLine("  reads <docsDir>/cmdlets/*.md and <docsDir>/about/about_*.md,");
        w.WriteLine($"  writes <outDir>/<Name>.dll-Help.xml (Name: {DefaultAssembly}) and <outDir>/about_*.help.txt");
        return code;
    }
}
