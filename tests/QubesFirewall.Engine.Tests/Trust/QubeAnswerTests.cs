using System.Diagnostics;
using System.Text;
using QubesFirewall.Engine.AdminApi;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Tests.AdminApi;
using QubesFirewall.Engine.Trust;
using QubesFirewall.Tests.Shared;

namespace QubesFirewall.Engine.Tests.Trust;

/// <summary>
/// dom0 trusts nothing a qube sends back: the one bounded reader (<see cref="BoundedReader"/>, used for every
/// qvm-run) and the one sanitizer (<see cref="QubeText"/>), against a stand-in qvm-run whose qubes answer like a
/// compromised one: without end, with terminal escapes, with bytes that are not UTF-8, with failing scripts.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class QubeAnswerTests : IDisposable
{
    private const string FwScript = "/rw/config/qubes-firewall-user-script";
    private const UnixFileMode Mode0755 = (UnixFileMode)0b111_101_101;
    private const UnixFileMode Mode0644 = (UnixFileMode)0b110_100_100;

    private readonly LiveQubesd _live = new();

    public void Dispose() => _live.Dispose();

    private AdminApiBackend Backend => _live.Backend;
    private StandInQvmRun QvmRun => _live.QvmRun;

    /// <summary>Makes the qube's <c>cat</c> (the fixed read command's) answer with <paramref name="shell"/> instead.</summary>
    private void CatAnswers(string shell)
    {
        QvmRun.Put("sys-net", FwScript, "#!/bin/sh\n", Mode0755);
        var shim = Path.Combine(QvmRun.Shims, "cat");
        File.WriteAllText(shim, "#!/bin/sh\n" + shell + "\n");
        File.SetUnixFileMode(shim, Mode0755);
    }

    // ------------------------------------------------------------------ the sanitizer

    private static bool IsControl(char c) => c is < ' ' and not ('\n' or '\t') or '\x7f' or (>= '\x80' and <= '\x9f');

    [Fact]
    public void C0_DEL_and_C1_controls_become_visible_escapes_newline_and_tab_stay()
    {
        var hostile = "\u001b]0;owned\u0007\u001b[2J\r\u007f\u009b31m\u0085 ok\n\tnext \u00e9 \U0001F600";
        Assert.Equal("\\x1b]0;owned\\x07\\x1b[2J\\x0d\\x7f\\x9b31m\\x85 ok\n\tnext \u00e9 \U0001F600", QubeText.Escape(hostile));
        Assert.DoesNotContain(QubeText.Escape(hostile), IsControl);
        Assert.Equal("plain text\n", QubeText.Escape("plain text\n"));
    }

    [Fact]
    public void Bytes_that_are_not_UTF8_are_kept_exactly_and_shown_as_escapes()
    {
        byte[] bytes = [0x23, 0x20, 0xff, 0xfe, 0xc3, 0xa9, 0xe2, 0x28, 0xa1, 0xed, 0xa0, 0x80, 0x0a, 0xf0, 0x9f, 0x98, 0x80];
        var text = QubeText.Decode(bytes);
        Assert.Equal(bytes, QubeText.Encode(text));
        Assert.DoesNotContain('\uFFFD', text);
        Assert.Contains("\u00e9", text);
        Assert.Equal("# \\xff\\xfe\u00e9\\xe2(\\xa1\\xed\\xa0\\x80\n\U0001F600", QubeText.Escape(text));
    }

    // ------------------------------------------------------------------ the bounded reader

    [Theory]
    [InlineData(0, true)]
    [InlineData(1000, true)]
    [InlineData(1001, false)]
    [InlineData(100_000, false)]
    public async Task The_bounded_reader_stops_at_the_first_byte_over_the_cap(int size, bool fits)
    {
        var reader = new BoundedReader(1000);
        Assert.Equal(fits, await reader.ReadAsync(new MemoryStream(new byte[size]), CancellationToken.None));
        Assert.Equal(!fits, reader.Exceeded);
        Assert.Equal(Math.Min(size, 1000), reader.ToArray().Length);
    }

    [Fact]
    public void A_qube_answering_300_MB_for_its_hook_file_is_stopped_at_1_MiB_and_named()
    {
        CatAnswers("exec head -c 300000000 /dev/zero");
        var watch = Stopwatch.StartNew();
        var ex = Assert.Throws<QubesFirewallException>(() => Backend.ReadQubeFile("sys-net", FwScript));
        Assert.Equal("QubeAnswerTooLarge", ex.ErrorId);
        Assert.Contains("'sys-net' answered more than 1 MiB on its output when asked to read " + FwScript, ex.Message);
        Assert.Contains(QubeAnswerLimits.FileVariable, ex.Message);
        Assert.Equal("sys-net", ex.Target);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(30), watch.Elapsed.ToString());
    }

    [Fact]
    public void A_qube_that_never_stops_answering_is_killed_not_waited_for()
    {
        CatAnswers("exec yes 'all work and no play'");
        Backend.CommandTimeout = TimeSpan.FromMinutes(5);
        var watch = Stopwatch.StartNew();
        var ex = Assert.Throws<QubesFirewallException>(() => Backend.ReadQubeFile("sys-net", FwScript));
        Assert.Equal("QubeAnswerTooLarge", ex.ErrorId); // not QubeCommandTimeout: qvm-run was killed at the cap
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(60), watch.Elapsed.ToString());
    }

    [Fact]
    public void The_caps_are_settable_and_error_output_has_its_own()
    {
        QvmRun.Put("work", "/rw/config/rc.local", new string('x', 5000));
        Backend.AnswerLimits = new QubeAnswerLimits { FileBytes = 4096, OutputBytes = 100 };
        Assert.Equal("QubeAnswerTooLarge", Assert.Throws<QubesFirewallException>(() => Backend.ReadQubeFile("work", "/rw/config/rc.local")).ErrorId);
        Backend.AnswerLimits = new QubeAnswerLimits { FileBytes = 8192, OutputBytes = 100 };
        Assert.Equal(5000, Backend.ReadQubeFile("work", "/rw/config/rc.local")!.Length);

        var ex = Assert.Throws<QubesFirewallException>(() => Backend.RunQubeShellScript("work", "i=0; while [ $i -lt 50 ]; do echo 'noise on stderr' >&2; i=$((i+1)); done", "noisy script"));
        Assert.Equal("QubeAnswerTooLarge", ex.ErrorId);
        Assert.Contains("'work' answered more than 100 bytes on its output when asked to run noisy script", ex.Message); // 2>&1: stderr arrives as output
        Assert.Contains(QubeAnswerLimits.OutputVariable, ex.Message);
    }

    [Fact]
    public void Limits_come_from_the_environment_and_a_bad_value_is_refused_by_name()
    {
        var limits = QubeAnswerLimits.FromEnvironment(n => n == QubeAnswerLimits.FileVariable ? "2048" : null);
        Assert.Equal(2048, limits.FileBytes);
        Assert.Equal(QubeAnswerLimits.DefaultOutputBytes, limits.OutputBytes);
        var ex = Assert.Throws<QubesFirewallException>(() => QubeAnswerLimits.FromEnvironment(n => n == QubeAnswerLimits.OutputVariable ? "-1\u001b" : null));
        Assert.Equal("InvalidQubeAnswerLimit", ex.ErrorId);
        Assert.Contains("\\x1b", ex.Message);
    }

    [Fact]
    public void Script_output_with_terminal_escapes_reaches_results_escaped()
    {
        var run = Backend.RunQubeShellScript("sys-net", "printf '\\033]0;owned\\007\\033[2J\\177\\302\\233fake$ '; printf 'err\\033[31m\\n' >&2", "escapes");
        Assert.True(run.Executed);
        Assert.Equal("\\x1b]0;owned\\x07\\x1b[2J\\x7f\\x9bfake$ err\\x1b[31m\n", run.Output);
    }

    [Fact]
    public void A_failed_read_shows_the_qubes_error_output_escaped()
    {
        CatAnswers("printf 'cat: \\033[2Jgone\\n' >&2; exit 1");
        var ex = Assert.Throws<QubesFirewallException>(() => Backend.ReadQubeFile("sys-net", FwScript));
        Assert.Equal("QubeCommandFailed", ex.ErrorId);
        Assert.Contains("\\x1b[2Jgone", ex.Message.Replace("\\\\", "\\"));
        Assert.DoesNotContain('\u001b', ex.Message);
    }

    [Fact]
    public void WhatIf_reports_new_file_content_escaped()
    {
        var reports = new List<string>();
        using (Backend.BeginDryRun(reports.Add))
            Backend.WriteQubeFile("sys-net", FwScript, "#!/bin/sh\n# the user's: \u001b]0;title\u0007\u009b\n", Mode0755);
        var report = Assert.Single(reports);
        Assert.Contains("# the user's: \\x1b]0;title\\x07\\x9b\n", report);
        Assert.DoesNotContain(report, IsControl);
        Assert.Empty(QvmRun.Calls);
    }

    [Fact]
    public void User_lines_that_are_not_UTF8_go_back_byte_for_byte()
    {
        byte[] user = [.. "#!/bin/sh\n# caf"u8, 0xe9, .. " latin-1\n"u8, 0xff, 0x0a];
        var file = QvmRun.FileOf("sys-net", FwScript);
        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
        File.WriteAllBytes(file, user);
        var text = Backend.ReadQubeFile("sys-net", FwScript)!;
        Backend.WriteQubeFile("sys-net", FwScript, text + "# added\n", Mode0755);
        Assert.Equal([.. user, .. "# added\n"u8], File.ReadAllBytes(file));
    }

    // ------------------------------------------------------------------ outcomes

    private static DeploymentStep Write(string vm, string previous) => new()
    {
        Kind = DeploymentStepKind.WriteFile, VMName = vm, Description = $"{vm}: write", Path = FwScript,
        Content = $"#!/bin/sh\necho new {vm}\n", PreviousContent = previous, Mode = Mode0755,
    };

    private static DeploymentStep Run(string vm, string script, string previous) => new()
    {
        Kind = DeploymentStepKind.RunScript, VMName = vm, Description = $"{vm}: run", Script = script, PreviousScript = previous, ScriptName = "test script",
    };

    [Fact]
    public void A_step_whose_rollback_fails_too_is_a_failure_naming_every_qube_left()
    {
        const string previous = "#!/bin/sh\necho previous\n";
        QvmRun.Put("sys-net", FwScript, previous, Mode0755);
        QvmRun.Put("sys-firewall", FwScript, previous, Mode0755);
        // ip6 qubes gone in sys-firewall: the new script fails, and so does the previous one.
        var steps = new List<DeploymentStep>
        {
            Write("sys-net", previous), Run("sys-net", "true", "true"),
            Write("sys-firewall", previous), Run("sys-firewall", "echo 'Error: No such file or directory; table ip6 qubes' >&2; exit 1", "echo 'still no table' >&2; exit 1"),
            Write("work", previous), Run("work", "true", "true"),
        };
        var result = Rollout.Run(Backend, steps);
        Assert.False(result.Succeeded);
        Assert.NotNull(result.Failed);
        Assert.Equal(DeploymentStepStatus.RollbackFailed, result.Failed!.Status);
        Assert.Equal("sys-firewall", result.Failed.Step.VMName);
        Assert.Equal([("sys-firewall", DeploymentStepStatus.RollbackFailed), ("work", DeploymentStepStatus.NotReached)], result.LeftQubes);
        var failure = result.Failure(ErrorIds.PortForwardRolledBack, ErrorIds.PortForwardPartiallyApplied, "Add port forward tcp/443 -> work", "Remove-QubePortForward", removing: false, null);
        Assert.NotNull(failure);
        Assert.Equal("PortForwardPartiallyApplied", failure!.ErrorId);
        Assert.Contains("Qubes left: sys-firewall (RollbackFailed), work (NotReached).", failure.Message);
        Assert.Contains("still no table", failure.Message);
        Assert.Equal(previous, QvmRun.Read("sys-net", FwScript)); // the hop before was put back
    }

    [Fact]
    public void A_rolled_back_file_gets_its_mode_back_a_0644_hook_stays_0644()
    {
        const string disabled = "#!/bin/sh\n# deliberately not executable\nrm -rf /home/user/important\n";
        QvmRun.Put("work", FwScript, disabled, Mode0644);
        var steps = new List<DeploymentStep> { Write("work", disabled), Run("work", "exit 1", "true") };
        var result = Rollout.Run(Backend, steps);
        Assert.False(result.Succeeded);
        Assert.True(result.FullyRolledBack);
        Assert.Equal(disabled, QvmRun.Read("work", FwScript));
        Assert.Equal(Mode0644, File.GetUnixFileMode(QvmRun.FileOf("work", FwScript)));
    }

    [Fact]
    public void A_qube_answering_garbage_for_a_file_mode_is_refused_and_nothing_is_written()
    {
        const string previous = "#!/bin/sh\n";
        QvmRun.Put("work", FwScript, previous, Mode0644);
        var stat = Path.Combine(QvmRun.Shims, "stat");
        File.WriteAllText(stat, "#!/bin/sh\nprintf '755\\033[2J\\n'\n");
        File.SetUnixFileMode(stat, Mode0755);
        var result = Rollout.Run(Backend, [Write("work", previous)]);
        Assert.False(result.Succeeded);
        Assert.Contains("not a file mode", result.Failed!.Message);
        Assert.Contains("\\x1b[2J", result.Failed.Message);
        Assert.Equal(previous, QvmRun.Read("work", FwScript));
    }
}
