using System.ComponentModel;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using CliWrap;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Validation;

namespace QubesFirewall.Engine.AdminApi;

/// <summary>What a command run inside a qube returned.</summary>
public sealed record QubeProcessResult(int ExitCode, byte[] StandardOutput, string StandardError)
{
    public string OutputText => Encoding.UTF8.GetString(StandardOutput);
}

/// <summary>
/// Runs one fixed shell command inside a qube as root, with bytes on its standard input. The live
/// backend's only way into a qube; tests replace the <c>qvm-run</c> it starts.
/// </summary>
public interface IQubeCommandRunner
{
    QubeProcessResult Run(string vmName, string command, ReadOnlyMemory<byte> standardInput, TimeSpan timeout);
}

/// <summary>
/// <c>qvm-run --pass-io --no-gui --no-autostart --no-filter-escape-chars --no-color-output -u root QUBE COMMAND</c>
/// through CliWrap. The command is one of <see cref="QubeFileCommands"/>' fixed commands; file content
/// travels on standard input, never in an argument. <c>--no-autostart</c>: a halted qube is refused,
/// never started behind the user's back; <c>--no-filter-escape-chars</c>: file content is read back
/// byte for byte (qvm-run filters only when its output is a terminal, this makes it explicit).
/// </summary>
public sealed class QvmRunCommandRunner : IQubeCommandRunner
{
    public const string DefaultExecutable = "qvm-run";

    private readonly string _executable;
    private readonly Func<string, string?> _environment;

    /// <param name="executable">A path, or a name looked up on PATH (at each call).</param>
    /// <param name="environment">Where PATH comes from (tests give their own, with stand-in executables).</param>
    public QvmRunCommandRunner(string executable = DefaultExecutable, Func<string, string?>? environment = null)
    {
        _executable = executable;
        _environment = environment ?? Environment.GetEnvironmentVariable;
    }

    /// <summary>The arguments given to qvm-run, in order.</summary>
    public static IReadOnlyList<string> Arguments(string vmName, string command) =>
        ["--pass-io", "--no-gui", "--no-autostart", "--no-filter-escape-chars", "--no-color-output", "-u", "root", QubeName.Validate(vmName), command];

    public QubeProcessResult Run(string vmName, string command, ReadOnlyMemory<byte> standardInput, TimeSpan timeout)
    {
        var executable = Resolve();
        var stdout = new MemoryStream();
        var stderr = new StringBuilder();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            var result = Cli.Wrap(executable)
                .WithArguments(Arguments(vmName, command))
                .WithStandardInputPipe(PipeSource.FromBytes(standardInput))
                .WithStandardOutputPipe(PipeTarget.ToStream(stdout))
                .WithStandardErrorPipe(PipeTarget.ToStringBuilder(stderr))
                .WithValidation(CommandResultValidation.None)
                .ExecuteAsync(cts.Token)
                .GetAwaiter().GetResult();
            return new QubeProcessResult(result.ExitCode, stdout.ToArray(), stderr.ToString());
        }
        catch (OperationCanceledException)
        {
            throw new QubesFirewallException("QubeCommandTimeout", FailureKind.ConnectionError,
                $"qvm-run in '{vmName}' did not finish within {timeout.TotalSeconds.ToString("0", CultureInfo.InvariantCulture)} s and was stopped; the qube may be busy or unresponsive.", vmName);
        }
        catch (Win32Exception ex)
        {
            throw new QubesFirewallException("QvmRunNotAvailable", FailureKind.ResourceUnavailable,
                $"Cannot start {executable}: {ex.Message}. The live backend runs commands in qubes through qvm-run, which exists only in dom0.", executable, ex);
        }
    }

    private string Resolve()
    {
        if (_executable.Contains('/')) return _executable;
        foreach (var dir in (_environment("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, _executable);
            if (File.Exists(candidate)) return candidate;
        }
        throw new QubesFirewallException("QvmRunNotAvailable", FailureKind.ResourceUnavailable,
            $"There is no {_executable} on PATH. The live backend runs commands in qubes through qvm-run, which exists only in dom0.", _executable);
    }
}

/// <summary>
/// The only commands the live backend runs inside a qube: fixed shell text in which the one variable
/// part, a path, has passed a strict grammar (letters, digits and <c>._-</c> per component, under
/// <c>/rw/</c>), so it can be single-quoted without any escaping. Content never appears in a command.
/// </summary>
public static partial class QubeFileCommands
{
    /// <summary>Exit code of <see cref="Read"/> when the file does not exist.</summary>
    public const int MissingExitCode = 3;

    [GeneratedRegex(@"\A/rw(/[A-Za-z0-9_][A-Za-z0-9._-]{0,99})+\z", RegexOptions.CultureInvariant)]
    private static partial Regex PathPattern();

    /// <summary>Returns <paramref name="path"/> when it is a safe path under /rw, else throws InvalidQubePath.</summary>
    public static string ValidatePath(string? path)
    {
        if (path is null || path.Length > 255 || !PathPattern().IsMatch(path) || path.Split('/').Any(c => c is "." or ".."))
            throw QubesFirewallException.Invalid("InvalidQubePath",
                $"'{RuleGrammar.Printable(path)}' is not a path this module writes in a qube: an absolute path under /rw whose components are ASCII letters, digits, '.', '_' and '-' (not starting with '.' or '-').", path);
        return path;
    }

    /// <summary>Prints the file, or exits with <see cref="MissingExitCode"/> when it does not exist.</summary>
    public static string Read(string path)
    {
        var p = ValidatePath(path);
        return $"if [ -e '{p}' ]; then exec cat -- '{p}'; else exit {MissingExitCode}; fi";
    }

    /// <summary>
    /// Writes standard input to a temporary file beside the target, sets its mode, renames it over the
    /// target: a reader in the qube sees the old or the new file, never a part. The temporary name is
    /// hidden (<c>.NAME.qfw-tmp.XXXXXX</c>): globs that run every file of a directory (<c>qubes-firewall.d/*</c>,
    /// <c>rc.local.d/*.rc</c>) never pick it up; it is created 0600 (mktemp) and keeps that mode while it is
    /// being filled, gets its final mode only once complete, just before the rename.
    /// </summary>
    public static string Write(string path, UnixFileMode mode)
    {
        var p = ValidatePath(path);
        var slash = p.LastIndexOf('/');
        var dir = p[..slash];
        var octal = Convert.ToString((int)mode & 0xFFF, 8);
        return $"umask 077 && mkdir -p -- '{dir}' && t=$(mktemp -- '{dir}/.{p[(slash + 1)..]}.{TemporaryMarker}XXXXXX') && {{ cat > \"$t\" && chmod {octal} -- \"$t\" && mv -f -- \"$t\" '{p}' || {{ rm -f -- \"$t\"; exit 1; }}; }}";
    }

    /// <summary>What the temporary names of <see cref="Write"/> carry after the hidden target name.</summary>
    public const string TemporaryMarker = "qfw-tmp.";

    /// <summary>Deletes the file (no error when it is not there).</summary>
    public static string Delete(string path) => $"rm -f -- '{ValidatePath(path)}'";

    /// <summary>Runs the shell script that follows on standard input (never written to a file), error output merged.</summary>
    public const string RunStandardInput = "exec /bin/sh -s 2>&1";

    /// <summary>Runs the file (an executable script with a shebang), its error output merged into its output.</summary>
    public static string Run(string path)
    {
        var p = ValidatePath(path);
        return $"exec '{p}' </dev/null 2>&1";
    }
}
