using System.Collections.Concurrent;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Io;
using QubesFirewall.Engine.Model;
using QubesFirewall.Tests.Shared;
using static QubesFirewall.Tests.Shared.QrexecPolicyModel;

namespace QubesFirewall.Engine.Tests.ConnectTcp;

/// <summary>
/// The generated dom0 policy, parsed by the test-side model of qrexec's parser (not compared as text), and
/// evaluated with qrexec's first-match semantics across every file of the directory in name order, the
/// sample root's stand-in of 90-default.policy included; the file name and temporary name rules.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class TcpBindingPolicyTests
{
    private static readonly Dictionary<string, Domain> Domains = new(StringComparer.Ordinal)
    {
        ["dom0"] = new("AdminVM", []),
        ["untrusted"] = new("AppVM", ["audit"]),
        ["personal"] = new("AppVM", []),
        ["work"] = new("AppVM", []),
        ["mytcp-service"] = new("AppVM", []),
        ["db.internal"] = new("StandaloneVM", []),
    };

    private static readonly Model.TcpBinding Main = Model.TcpBinding.Create("untrusted", "mytcp-service", 444, 10444, permanent: true);

    private static string SampleFile(string name) =>
        File.ReadAllText(Path.Combine(TempRoot.SamplePath(), "qubesfirewall-state", "dom0", "etc", "qubes", "policy.d", name));

    private static string Generated(params Model.TcpBinding[] bindings) => QrexecPolicy.Render(bindings)!;

    private static IReadOnlyList<Rule> Policy(string generated, string? user = null, string name = QrexecPolicy.FileName)
    {
        var files = new List<(string, string)>
        {
            ("35-compat.policy", SampleFile("35-compat.policy")),
            ("90-default.policy", SampleFile("90-default.policy")),
            (name, generated),
        };
        if (user is not null) files.Add(("30-user.policy", user));
        return Load(files);
    }

    private static Result Call(IReadOnlyList<Rule> rules, string source, int port, string target = "@default") =>
        Evaluate(rules, "qubes.ConnectTCP", "+" + port, source, target, Domains);

    [Fact]
    public void Each_line_is_a_rule_qrexec_accepts_with_the_fields_of_its_binding()
    {
        var second = Model.TcpBinding.Create("work", "db.internal", 5432);
        var rules = ParseFile(QrexecPolicy.FileName, Generated(Main, second));
        Assert.Equal(2, rules.Count);
        var r = rules.Single(x => x.Source == "untrusted");
        Assert.Equal(("qubes.ConnectTCP", "+444", "untrusted", "@default", "allow"), (r.Service, r.Argument, r.Source, r.Target, r.Action));
        Assert.Equal(new Dictionary<string, string> { ["target"] = "mytcp-service" }, r.Params);
        var w = rules.Single(x => x.Source == "work");
        Assert.Equal(("+5432", "db.internal"), (w.Argument, w.Params["target"]));
    }

    [Fact]
    public void The_bound_client_reaches_its_target_and_nothing_else_changes()
    {
        var rules = Policy(Generated(Main));
        var allowed = Call(rules, "untrusted", 444);
        Assert.Equal(("allow", "mytcp-service"), (allowed.Outcome, allowed.Target));
        Assert.Equal(QrexecPolicy.FileName, allowed.Rule!.File);

        // another source, another port, another way of naming the target: on to 90-default.policy, as before
        foreach (var (source, port, target) in new[] { ("personal", 444, "@default"), ("work", 444, "@default"), ("untrusted", 555, "@default"), ("untrusted", 444, "mytcp-service") })
        {
            var r = Call(rules, source, port, target);
            Assert.Equal("deny", r.Outcome);
            Assert.Equal("90-default.policy", r.Rule!.File);
        }
        // other services are untouched
        Assert.Equal("ask", Evaluate(rules, "qubes.Filecopy", "+", "untrusted", "work", Domains).Outcome);
    }

    [Fact]
    public void Without_the_file_the_default_denies_so_the_result_is_the_file_s_doing()
    {
        var rules = Load([("35-compat.policy", SampleFile("35-compat.policy")), ("90-default.policy", SampleFile("90-default.policy"))]);
        Assert.Equal("deny", Call(rules, "untrusted", 444).Outcome);
    }

    [Fact]
    public void Seventy_comes_after_the_user_s_file_so_an_explicit_deny_there_still_wins()
    {
        var rules = Policy(Generated(Main), user: "qubes.ConnectTCP * untrusted @anyvm deny\n");
        var r = Call(rules, "untrusted", 444);
        Assert.Equal(("deny", "30-user.policy"), (r.Outcome, r.Rule!.File));
        // and a user's allow of something else stays theirs
        var asked = Call(Policy(Generated(Main), user: "qubes.ConnectTCP +8080 personal @default ask default_target=work\n"), "personal", 8080);
        Assert.Equal("ask", asked.Outcome);
    }

    [Fact]
    public void A_name_after_90_would_be_shadowed_by_the_default_deny()
    {
        var late = Call(Policy(Generated(Main), name: "95-qubesfirewall.policy"), "untrusted", 444);
        Assert.Equal(("deny", "90-default.policy"), (late.Outcome, late.Rule!.File));
        Assert.True(string.CompareOrdinal(QrexecPolicy.FileName, "90-default.policy") < 0);
        Assert.True(string.CompareOrdinal(QrexecPolicy.FileName, "30-user.policy") > 0);
        Assert.True(string.CompareOrdinal(QrexecPolicy.FileName, "35-compat.policy") > 0);
        Assert.True(string.CompareOrdinal(QrexecPolicy.FileName, "50-config-filecopy.policy") > 0);
    }

    [Fact]
    public void Lines_of_several_bindings_never_shadow_each_other()
    {
        var bindings = new[]
        {
            Main,
            Model.TcpBinding.Create("untrusted", "work", 22),
            Model.TcpBinding.Create("personal", "mytcp-service", 444),
            Model.TcpBinding.Create("work", "db.internal", 5432, 15432, true),
        };
        var rules = Policy(Generated(bindings));
        foreach (var b in bindings)
        {
            var r = Call(rules, b.From, b.Port);
            Assert.Equal(("allow", b.To), (r.Outcome, r.Target));
        }
        Assert.Equal("deny", Call(rules, "personal", 22).Outcome);
        Assert.Equal("deny", Call(rules, "work", 444).Outcome);
        // the file is the same whatever order the declarations come in
        Assert.Equal(Generated(bindings), Generated([.. bindings.Reverse()]));
    }

    [Fact]
    public void No_binding_means_no_file() => Assert.Null(QrexecPolicy.Render([]));

    [Fact]
    public void The_file_name_is_one_qrexec_reads_and_the_temporary_name_one_it_ignores()
    {
        Assert.Equal([QrexecPolicy.FileName], ConsideredFiles([QrexecPolicy.FileName]));
        // AtomicFile's temporary names: .<name>~<pid>-<random>.tmp
        var prefix = AtomicFile.TemporaryPrefix("/etc/qubes/policy.d/" + QrexecPolicy.FileName);
        foreach (var tmp in new[] { prefix + Environment.ProcessId + "-0123abcd.tmp", prefix + "1-ffffffff.tmp" })
        {
            Assert.True(AtomicFile.IsTemporaryName(tmp));
            Assert.Empty(ConsideredFiles([tmp]));
            Assert.False(QrexecPolicy.IsConsidered(tmp));
            Assert.StartsWith(".", tmp);
            Assert.False(tmp.EndsWith(".policy", StringComparison.Ordinal));
        }
        // why it matters: a considered file with a bad name makes qrexec refuse every call
        Assert.Throws<PolicyException>(() => ConsideredFiles([QrexecPolicy.FileName, "70-QubesFirewall.policy"]));
        Assert.Throws<PolicyException>(() => ConsideredFiles(["70-qubesfirewall.policy~1234.policy"]));
        Assert.Empty(ConsideredFiles([".70-qubesfirewall.policy", "70-qubesfirewall.policy.tmp", "README"]));
        // the engine agrees with the model on which names are read and which are valid
        foreach (var name in new[] { QrexecPolicy.FileName, ".x.policy", "a.policy.tmp", "README", "70-A.policy", "x.policy" })
            Assert.Equal(ConsideredFilesSafe(name), QrexecPolicy.IsConsidered(name) && QrexecPolicy.HasValidName(name));
    }

    private static bool ConsideredFilesSafe(string name)
    {
        try { return ConsideredFiles([name]).Count == 1; }
        catch (PolicyException) { return false; }
    }

    [Fact]
    public void A_write_never_shows_qrexec_a_policy_file_other_than_the_final_one()
    {
        var dir = Path.Combine(Path.GetTempPath(), "qfw-policyd-" + Guid.NewGuid().ToString("N")[..8]);
        var policyDir = Path.Combine(dir, "qubesfirewall-state", "dom0", "etc", "qubes", "policy.d");
        Directory.CreateDirectory(policyDir);
        File.WriteAllText(Path.Combine(dir, "qubes.xml"), QubesXmlBuilder.Standard().Build());
        var seen = new ConcurrentQueue<string>();
        try
        {
            using var root = new Backends.OfflineRoot(dir);
            using var watcher = new FileSystemWatcher(policyDir) { IncludeSubdirectories = false, EnableRaisingEvents = true };
            watcher.Created += (_, e) => seen.Enqueue(e.Name!);
            watcher.Changed += (_, e) => seen.Enqueue(e.Name!);
            watcher.Renamed += (_, e) => { seen.Enqueue(e.OldName!); seen.Enqueue(e.Name!); };
            for (var i = 0; i < 5; i++)
                root.WriteDom0File(QrexecPolicy.FilePath, Generated(Model.TcpBinding.Create("untrusted", "work", 1000 + i)), QrexecPolicy.FileMode);
            var deadline = DateTime.UtcNow.AddSeconds(5);
            while (!seen.Any(n => n != QrexecPolicy.FileName && n.Contains('~')) && DateTime.UtcNow < deadline) Thread.Sleep(20);
            Thread.Sleep(100);
            Assert.Contains(seen, n => n.Contains('~')); // the watcher saw the temporary files
            foreach (var name in seen.Distinct())
                if (name != QrexecPolicy.FileName)
                    Assert.Empty(ConsideredFiles([name]));
            Assert.Equal(QrexecPolicy.FileMode, File.GetUnixFileMode(Path.Combine(policyDir, QrexecPolicy.FileName)));
            Assert.Equal([QrexecPolicy.FileName], ConsideredFiles(Directory.EnumerateFiles(policyDir).Select(Path.GetFileName)!));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void The_engine_s_own_check_finds_the_same_deciding_line_as_the_model()
    {
        var qube = new Qube { Name = "untrusted", Class = QubeClass.AppVM, ClassName = "AppVM", Tags = ["audit"] };
        var user = "qubes.ConnectTCP +22 @tag:audit @anyvm deny\nqubes.ConnectTCP * @type:AppVM @default ask default_target=work\n";
        var files = new List<(string Name, string Content)>
        {
            ("30-user.policy", user),
            ("90-default.policy", SampleFile("90-default.policy")),
            (QrexecPolicy.FileName, Generated(Main, Model.TcpBinding.Create("untrusted", "work", 22))),
        };
        var model = Load(files);
        foreach (var port in new[] { 22, 444, 555 })
        {
            var expected = Call(model, "untrusted", port);
            var engine = QrexecPolicy.Evaluate(files, "qubes.ConnectTCP", "+" + port, qube);
            Assert.Null(engine.Problem);
            Assert.Equal((expected.Rule!.File, expected.Rule.Line), (engine.Rule!.File, engine.Rule.Line));
            Assert.Equal(expected.Outcome, engine.Action);
        }
        // a bad name anywhere: qrexec refuses everything, and the engine says so
        files.Add(("31-Mine.policy", ""));
        Assert.Throws<PolicyException>(() => Load(files));
        Assert.Contains("refuses every call", QrexecPolicy.Evaluate(files, "qubes.ConnectTCP", "+444", qube).Problem);
    }

    [Fact]
    public void The_engine_follows_compat_files_with_their_implicit_deny()
    {
        var qube = new Qube { Name = "personal", Class = QubeClass.AppVM, ClassName = "AppVM" };
        var files = new List<(string Name, string Content)>
        {
            ("35-compat.policy", SampleFile("35-compat.policy")),
            ("90-default.policy", SampleFile("90-default.policy")),
            (QrexecPolicy.FileName, Generated(Model.TcpBinding.Create("personal", "work", 444))),
        };
        string? Legacy(string name) => name == "qubes.ConnectTCP+444" ? "untrusted $default allow,target=vault\n" : null;
        var decision = QrexecPolicy.Evaluate(files, "qubes.ConnectTCP", "+444", qube, Legacy);
        Assert.Equal("deny", decision.Action);
        Assert.Equal("/etc/qubes-rpc/policy/qubes.ConnectTCP+444", decision.Rule!.File);
        var untrusted = QrexecPolicy.Evaluate(files, "qubes.ConnectTCP", "+444", qube with { Name = "untrusted" }, Legacy);
        Assert.Equal(("allow", "vault"), (untrusted.Action, untrusted.RedirectTarget));
        // without R4.0 files, the module's line decides
        Assert.Equal(QrexecPolicy.FileName, QrexecPolicy.Evaluate(files, "qubes.ConnectTCP", "+444", qube, _ => null).Rule!.File);
    }
}
