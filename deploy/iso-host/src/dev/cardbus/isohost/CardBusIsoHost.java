package dev.cardbus.isohost;

import java.io.IOException;
import java.io.InputStreamReader;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Properties;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import org.jpos.core.SimpleConfiguration;
import org.jpos.iso.BaseChannel;
import org.jpos.iso.ISOException;
import org.jpos.iso.ISOMsg;
import org.jpos.iso.ISORequestListener;
import org.jpos.iso.ISOServer;
import org.jpos.iso.ISOSource;
import org.jpos.iso.channel.PostChannel;
import org.jpos.security.SMAdapter;
import org.jpos.security.SecureDESKey;
import org.jpos.security.jceadapter.JCESecurityModule;
import org.jpos.util.ThreadPool;

/**
 * A small bank authorization host on jPOS: ISO 8583:1987 over TCP with a 2-byte big-endian
 * length prefix (jPOS's PostChannel), on 127.0.0.1 only.
 *
 * <p>It answers 0800 (DE 70: 001 sign-on, 002 sign-off, 301 echo) with 0810, 0100 with 0110
 * (and a balance inquiry, processing code 31, with DE 54), 0400/0401 with 0410. Its keys (zone
 * PIN key, issuer master key for cryptograms, PIN verification key, card-file key) arrive on
 * stdin as clear components at start, are formed into jPOS's JCESecurityModule under local
 * master keys generated in memory for this run, and are never written anywhere.
 *
 * <p>Usage: {@code java -cp <libs>/*:<classes> dev.cardbus.isohost.CardBusIsoHost PORT CARD_FILE}
 */
public final class CardBusIsoHost implements ISORequestListener {
    private final Bank bank;
    private final ScheduledExecutorService worker = Executors.newSingleThreadScheduledExecutor();

    CardBusIsoHost(Bank bank) {
        this.bank = bank;
    }

    public static void main(String[] args) {
        try {
            run(args);
        } catch (Exception e) {  // the server thread would keep a half-started host alive
            System.err.println("iso-host: cannot start: " + e.getMessage());
            System.exit(1);
        }
    }

    @SuppressWarnings("deprecation")  // ISOServer takes jPOS 2.1's ThreadPool
    private static void run(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: CardBusIsoHost PORT CARD_FILE (keys on stdin)");
            System.exit(2);
        }
        int port = Integer.parseInt(args[0]);
        Properties keys = new Properties();
        keys.load(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
        JCESecurityModule sm = new JCESecurityModule();
        SimpleConfiguration cfg = new SimpleConfiguration();
        cfg.put("rebuildlmk", "true");  // fresh LMKs in memory: no LMK file, nothing at rest
        // BouncyCastle (a jPOS dependency): Java 17 does not open SunJCE's class to jPOS
        cfg.put("provider", "org.bouncycastle.jce.provider.BouncyCastleProvider");
        sm.setConfiguration(cfg);
        SecureDESKey zpk = form(sm, SMAdapter.TYPE_ZPK, keys, "zpk");
        SecureDESKey imk = form(sm, SMAdapter.TYPE_MK_AC, keys, "imk_ac");
        SecureDESKey pvk = form(sm, SMAdapter.TYPE_PVK, keys, "pvk");
        byte[] fileKey = hex(required(keys, "card_file_key"));
        keys.clear();
        CardTable table = new CardTable(Path.of(args[1]), fileKey);
        int cards = table.size();  // a card file that does not open stops the start here
        Bank bank = new Bank(sm, zpk, imk, pvk, table);
        ISOServer server = new ISOServer(port, new PostChannel(new CardBus87Packager()),
                new ThreadPool(1, 64));
        server.setConfiguration(new SimpleConfiguration());  // its shutdown hook reads it
        server.setSocketFactory(p -> new ServerSocket(p, 50, InetAddress.getLoopbackAddress()));
        server.addISORequestListener(new CardBusIsoHost(bank));
        Thread t = new Thread(server, "iso-server");
        t.start();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            server.shutdown();
            log("stopped");
        }));
        log("listening on 127.0.0.1:" + port + " cards=" + cards
                + " (jPOS 2.1.10, ISO 8583:1987, 2-byte length prefix)");
    }

    private static String required(Properties p, String name) {
        String v = p.getProperty(name);
        if (v == null || v.isBlank()) {
            throw new IllegalArgumentException("stdin: missing " + name);
        }
        return v.trim();
    }

    private static SecureDESKey form(JCESecurityModule sm, String type, Properties p,
                                     String name) throws Exception {
        String clear = required(p, name);
        if (clear.length() != 32) {
            throw new IllegalArgumentException(name + ": a double-length TDES key (32 hex)");
        }
        return sm.formKEYfromClearComponents(SMAdapter.LENGTH_DES3_2KEY, type, clear);
    }

    static byte[] hex(String s) {
        byte[] out = new byte[s.length() / 2];
        for (int i = 0; i < out.length; i++) {
            out[i] = (byte) Integer.parseInt(s.substring(2 * i, 2 * i + 2), 16);
        }
        return out;
    }

    static void log(String line) {
        System.out.println(java.time.Instant.now() + " iso-host " + line);
        System.out.flush();
    }

    @Override
    public boolean process(ISOSource source, ISOMsg m) {
        worker.execute(() -> handle(source, m));
        return true;
    }

    private void handle(ISOSource source, ISOMsg m) {
        try {
            Bank.Answer a = bank.answer(m);
            if (a == null) {
                return;
            }
            if (a.delayMs > 0) {
                worker.schedule(() -> deliver(source, a), a.delayMs, TimeUnit.MILLISECONDS);
            } else {
                deliver(source, a);
            }
        } catch (ISOException | IOException | RuntimeException e) {
            log("error " + e.getClass().getSimpleName() + ": " + e.getMessage());
        }
    }

    private void deliver(ISOSource source, Bank.Answer a) {
        try {
            if (!source.isConnected()) {
                log("answer stan=" + a.stan + " not sent: connection gone");
                return;
            }
            switch (a.behaviour) {
                case "drop" -> {
                    log("dropping the connection (card flag) stan=" + a.stan);
                    ((BaseChannel) source).disconnect();
                }
                case "short" -> sendRaw(source, "011".getBytes(StandardCharsets.US_ASCII));
                case "bad-bitmap" -> sendRaw(source, badBitmap());
                default -> source.send(a.msg);
            }
        } catch (ISOException | IOException e) {
            log("send failed stan=" + a.stan + ": " + e.getMessage());
        }
    }

    /** ``payload`` framed by hand (jPOS's raw send writes no length prefix). */
    private static void sendRaw(ISOSource source, byte[] payload)
            throws IOException, ISOException {
        byte[] framed = new byte[payload.length + 2];
        framed[0] = (byte) (payload.length >> 8);
        framed[1] = (byte) payload.length;
        System.arraycopy(payload, 0, framed, 2, payload.length);
        ((BaseChannel) source).send(framed);
    }

    /** An 0110 whose bitmap announces DE 2 and DE 39 but whose body is neither. */
    private static byte[] badBitmap() {
        byte[] mti = "0110".getBytes(StandardCharsets.US_ASCII);
        byte[] bitmap = {0x40, 0, 0, 0, 0, 0x20, 0, 0};
        byte[] body = "ZZ".getBytes(StandardCharsets.US_ASCII);
        byte[] out = new byte[mti.length + bitmap.length + body.length];
        System.arraycopy(mti, 0, out, 0, mti.length);
        System.arraycopy(bitmap, 0, out, mti.length, bitmap.length);
        System.arraycopy(body, 0, out, mti.length + bitmap.length, body.length);
        return out;
    }
}
